"""KAN: the GR-KAN layer that replaces the transformer MLP (act1 -> drop -> fc1 -> act2 -> drop -> fc2)."""

from __future__ import annotations

import math
from functools import partial
from typing import Literal

import torch
from timm.layers import to_2tuple, trunc_normal_
from torch import nn

from .group_rational import DEFAULT_NUM_GROUPS, DEFAULT_ORDER, GroupRational

__all__ = ["KAN", "KanInit", "kan_init_"]

KanInit = Literal["variance_preserving", "reference"]


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
        device: parameter device. Defaults to None.
        dtype: parameter dtype. Defaults to None.
    """

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
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        del act_layer  # the activations are the rationals
        if kan_init not in ("variance_preserving", "reference"):
            raise ValueError(f"kan_init must be 'variance_preserving' or 'reference', got {kan_init!r}")
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
        x = self.act1(x)
        x = self.drop1(x)
        x = self.fc1(x)
        x = self.act2(x)
        x = self.drop2(x)
        x = self.norm(x)
        x = self.fc2(x)
        return x

    def extra_repr(self) -> str:
        return f"kan_init={self.kan_init!r}"


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
