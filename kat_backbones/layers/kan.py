"""KAN: the GR-KAN layer that replaces the transformer MLP (act1 -> drop -> fc1 -> act2 -> drop -> fc2)."""

from __future__ import annotations

import math
import warnings
from functools import partial
from typing import Literal

import torch
from timm.layers import to_2tuple, trunc_normal_
from torch import nn

from kat_backbones.ops import available_backends
from kat_backbones.ops.fused_kan import kan_triton, layer_norm_rational, triton_usable

from .group_rational import DEFAULT_NUM_GROUPS, DEFAULT_ORDER, GroupRational

__all__ = ["KAN", "KanImpl", "KanInit", "kan_init_"]

KanInit = Literal["variance_preserving", "reference"]
KanImpl = Literal["auto", "unfused", "fused", "triton"]
_KAN_IMPLS = ("auto", "unfused", "fused", "triton")


class KAN(nn.Module):
    """Group-rational KAN layer with timm's ``Mlp`` constructor signature (use as ``Block(mlp_layer=KAN)``).

    ``act1`` (rational, identity init, on ``in_features``) -> ``drop1`` -> ``fc1`` -> ``act2`` (rational,
    ``act_init``, on ``hidden_features``) -> ``drop2`` -> ``norm`` -> ``fc2``. The submodule names match the
    released KAT checkpoints (``mlp.act1.weight_numerator``, ``mlp.fc1.weight``, ...).

    Initialisation of fc1/fc2 (``kan_init``):

    - ``'variance_preserving'`` (default; the paper's S3): for y = W F(x), std(W) = sqrt(1 / (fan_in E[F(x)^2]))
      with x ~ N(0, 1) and E[F(x)^2] computed numerically from the layer's current rational coefficients; so
      fc1 std = 1/sqrt(in_features) for the identity act1 and fc2 std = sqrt(g / hidden_features), g = 1/E[act2^2]
      (about 2.81 for swish). Zero biases. Output variance ~ input variance for N(0, 1) tokens.
    - ``'reference'``: what the reference implementation (and so the released checkpoints) used:
      trunc_normal(std=0.02) on fc1/fc2, zero biases.

    timm's ViT init overwrites every ``nn.Linear`` and then calls each module's ``init_weights()``; ``KAN``'s
    re-applies its own fc init, and :func:`kan_init_` does the same for a whole model.

    Implementations (``kan_impl``; same parameters, same results up to rounding, see docs/kat.md):

    - ``'unfused'``: module by module, as listed above.
    - ``'fused'``: where the layer is given its pre-norm (:meth:`forward_with_norm`, called by
      :class:`kat_backbones.layers.KANBlock`), LayerNorm + act1 run as one autograd node on the compiled op that
      keeps only the LayerNorm input for backward (the LayerNorm is recomputed there): KAT then keeps no more
      activations than a ViT. Bitwise the unfused outputs and gradients. The rest is unfused, and so is all of
      it without autograd (``torch.no_grad()``: nothing is saved, and module hooks such as the FLOP counter's see
      every submodule).
    - ``'triton'``: the whole layer in Triton kernels (LayerNorm + act1 in one pass, act2 in fc1's GEMM epilogue,
      act1/act2 outputs recomputed in backward, deterministic coefficient gradients); needs Triton and a CUDA
      tensor (CPU tensors only under ``TRITON_INTERPRET=1``), dropout inactive and no hidden ``norm``; elsewhere it
      runs as ``'fused'``.
    - ``'auto'`` (default): ``'fused'`` on every device (measured as fast as ``'unfused'`` on CPU with fewer saved
      activations); ``'triton'`` stays opt-in until it is measured faster on a GPU (docs/benchmarks.md).

    The choice is resolved once per (device, dtype, train/eval, autocast) configuration and cached.

    Args:
        in_features: input channels C.
        hidden_features: hidden channels. Defaults to ``in_features``.
        out_features: output channels. Defaults to ``in_features``.
        act_layer: accepted for timm compatibility and ignored (the activations are the rationals).
        norm_layer: optional norm on the hidden features (timm's ``scale_mlp_norm``). Defaults to None.
        bias: bias of fc1 and fc2 (a bool or a pair). Defaults to True.
        drop: dropout after act1 and after act2 (a float or a pair). Defaults to 0.
        use_conv: 1x1 convolutions on (B, C, H, W) instead of linears on (..., C). Defaults to False.
        num_groups: rational groups G (must divide in_features and hidden_features). Defaults to 8.
        act_init: initial function of act2 (``'swish'``, ``'gelu'``, ...; act1 is always identity). Defaults to
            ``'swish'``.
        kan_init: ``'variance_preserving'`` or ``'reference'``. Defaults to ``'variance_preserving'``.
        rational_order: (m, n) of both rationals. Defaults to (5, 4).
        shared_numerator: one numerator per rational (KAT layout) or one per group. Defaults to True.
        kan_impl: ``'auto'``, ``'unfused'``, ``'fused'`` or ``'triton'`` (see above). Defaults to ``'auto'``.
        device: parameter device. Defaults to None.
        dtype: parameter dtype. Defaults to None.
    """

    # the eager path cache (keys hold devices and ids) is no TorchScript type; scripted KANs take the plain path
    __jit_ignored_attributes__ = ["_paths"]

    def __init__(
        self,
        in_features: int,
        hidden_features: int | None = None,
        out_features: int | None = None,
        act_layer: type[nn.Module] | None = None,
        norm_layer: type[nn.Module] | None = None,
        bias: bool | tuple[bool, bool] = True,
        drop: float | tuple[float, float] = 0.0,
        use_conv: bool = False,
        num_groups: int = DEFAULT_NUM_GROUPS,
        act_init: str = "swish",
        kan_init: KanInit = "variance_preserving",
        rational_order: tuple[int, int] = DEFAULT_ORDER,
        shared_numerator: bool = True,
        kan_impl: KanImpl = "auto",
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        del act_layer  # the activations are the rationals
        if kan_init not in ("variance_preserving", "reference"):
            raise ValueError(f"kan_init must be 'variance_preserving' or 'reference', got {kan_init!r}")
        if kan_impl not in _KAN_IMPLS:
            raise ValueError(f"kan_impl must be one of {_KAN_IMPLS}, got {kan_impl!r}")
        out_features = out_features or in_features
        hidden_features = hidden_features or in_features
        for name, channels in (("in_features", in_features), ("hidden_features", hidden_features)):
            if channels % num_groups:
                raise ValueError(f"KAN: num_groups={num_groups} must divide {name}={channels}")
        bias = to_2tuple(bias)
        drop_probs = to_2tuple(drop)
        dd = {"device": device, "dtype": dtype}
        linear_layer = partial(nn.Conv2d, kernel_size=1) if use_conv else nn.Linear
        rational = partial(
            GroupRational, num_groups=num_groups, order=rational_order, shared_numerator=shared_numerator,
            channel_dim=1 if use_conv else -1, **dd,
        )
        self.kan_init = kan_init
        self.kan_impl = kan_impl
        self.use_conv = use_conv
        self._paths: dict[tuple, str] = {}  # resolved implementation per configuration (see _path)
        self.act1 = rational(init="identity")
        self.drop1 = nn.Dropout(drop_probs[0])
        self.fc1 = linear_layer(in_features, hidden_features, bias=bias[0], **dd)
        self.act2 = rational(init=act_init)
        self.drop2 = nn.Dropout(drop_probs[1])
        self.norm = norm_layer(hidden_features, **dd) if norm_layer is not None else nn.Identity()
        self.fc2 = linear_layer(hidden_features, out_features, bias=bias[1], **dd)
        self.init_weights()

    def reset_parameters(self) -> None:
        """Resets both rationals to their init functions, then re-initialises fc1/fc2 (:meth:`init_weights`)."""
        self.act1.reset_parameters()
        self.act2.reset_parameters()
        if not isinstance(self.norm, nn.Identity) and hasattr(self.norm, "reset_parameters"):
            self.norm.reset_parameters()
        self.init_weights()

    def init_weights(self) -> None:
        """(Re-)initialises fc1/fc2 according to ``kan_init`` from the current rational coefficients."""
        if self.fc1.weight.is_meta:
            return
        if self.kan_init == "reference":
            _init_linear(self.fc1, std=0.02, truncated=True)
            _init_linear(self.fc2, std=0.02, truncated=True)
            return
        for fc, act in ((self.fc1, self.act1), (self.fc2, self.act2)):
            fan_in = fc.weight[0].numel()
            _init_linear(fc, std=math.sqrt(1.0 / (fan_in * act.second_moment())), truncated=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not torch.jit.is_scripting():  # TorchScript: the plain path (the Triton choice is eager-only)
            if self.kan_impl == "triton" and self._path(x, None) == "triton":
                return self._forward_triton(x, None)
        return self._forward_after_act1(self.act1(x))

    def forward_with_norm(self, x: torch.Tensor, norm: nn.Module) -> torch.Tensor:
        """``self(norm(x))``, with ``norm`` (the block's pre-MLP LayerNorm) fused into act1 where possible."""
        if torch.onnx.is_in_onnx_export():  # both exporters: the plain pair, whose op records standard ONNX ops
            return self.forward(norm(x))
        path = self._path(x, norm)
        if path == "triton":
            return self._forward_triton(x, norm)
        if path == "fused" and torch.is_grad_enabled():  # without autograd there is nothing to save: unfused
            num, den = self.act1.coefficients(x.dtype)
            return self._forward_after_act1(layer_norm_rational(x, norm.weight, norm.bias, norm.eps, num, den))
        return self.forward(norm(x))

    def _forward_after_act1(self, x: torch.Tensor) -> torch.Tensor:
        x = self.drop1(x)
        x = self.fc1(x)
        x = self.act2(x)
        x = self.drop2(x)
        x = self.norm(x)
        x = self.fc2(x)
        return x

    def _forward_triton(self, x: torch.Tensor, norm: nn.Module | None) -> torch.Tensor:
        num1, den1 = self.act1.coefficients(x.dtype)
        math = torch.float64 if x.dtype == torch.float64 else torch.float32
        num2, den2 = self.act2.coefficients(math)
        return kan_triton(
            x, (norm.weight, norm.bias, norm.eps) if norm is not None else None, num1, den1, self.fc1.weight,
            self.fc1.bias, num2, den2, self.fc2.weight, self.fc2.bias,
        )

    def _path(self, x: torch.Tensor, norm: nn.Module | None) -> str:
        """'unfused', 'fused' or 'triton' for this input: decided once per configuration, then cached."""
        autocast = torch.is_autocast_enabled(x.device.type)
        key = (x.device, x.dtype, self.training, autocast, id(norm) if norm is not None else None)
        path = self._paths.get(key)
        if path is None:
            path = self._paths[key] = self._resolve_path(x, norm)
        return path

    def _resolve_path(self, x: torch.Tensor, norm: nn.Module | None) -> str:
        if self.kan_impl == "unfused" or self.use_conv or x.dim() < 1:
            return "unfused"
        pre_norm = norm is not None and (
            type(norm) in _FUSABLE_NORMS and norm.weight is not None and norm.bias is not None
            and tuple(norm.normalized_shape) == (x.shape[-1],) and not getattr(norm, "fast_norm", False)
        )
        if self.kan_impl == "triton":
            active_dropout = self.training and (self.drop1.p > 0 or self.drop2.p > 0)
            triton_ok = not active_dropout and isinstance(self.norm, nn.Identity) and (norm is None or pre_norm)
            if triton_ok and triton_usable(x.device):
                return "triton"
            warnings.warn(
                "KAN(kan_impl='triton') runs as 'fused' here: "
                + ("Triton cannot run on this device" if triton_ok else "dropout is active, or a hidden norm / "
                   "a pre-norm other than nn.LayerNorm is used"), RuntimeWarning, stacklevel=3,
            )
        if pre_norm and x.device.type in available_backends():
            return "fused"
        return "unfused"

    def extra_repr(self) -> str:
        return f"kan_init={self.kan_init!r}, kan_impl={self.kan_impl!r}"


def _fusable_norms() -> tuple[type, ...]:
    # timm's LayerNorm subclasses nn.LayerNorm with the same math (except with its fast-norm option, which may run in
    # the autocast dtype: such norms are not fused)
    from timm.layers import LayerNorm

    return (nn.LayerNorm, LayerNorm)


_FUSABLE_NORMS = _fusable_norms()


def _init_linear(layer: nn.Module, std: float, truncated: bool) -> None:
    with torch.no_grad():
        if truncated:
            trunc_normal_(layer.weight, std=std)
        else:
            nn.init.normal_(layer.weight, std=std)
        if layer.bias is not None:
            nn.init.zeros_(layer.bias)


def kan_init_(module: nn.Module) -> nn.Module:
    """Re-applies the KAN fc1/fc2 init (:meth:`KAN.init_weights`) to every :class:`KAN` inside ``module``.

    Use after an init that overwrote all linears (e.g. timm's ViT init). Returns ``module``.
    """
    for m in module.modules():
        if isinstance(m, KAN):
            m.init_weights()
    return module
