"""GroupRational: the learnable group-rational activation of GR-KAN, as an ``nn.Module`` on the compiled op."""

from __future__ import annotations

import torch
from timm.layers import register_notrace_module
from torch import nn

from kat_backbones.ops import available_backends, compiled_channel_dim, extension_error, group_rational, rational_1d

from .rational_init import get_rational_init

__all__ = ["DEFAULT_NUM_GROUPS", "DEFAULT_ORDER", "GroupRational", "apply_group_rational", "rational_second_moment"]

DEFAULT_NUM_GROUPS = 8
"""Channel groups G of every rational in the released KAT models (each group of C/G channels shares coefficients)."""

DEFAULT_ORDER = (5, 4)
"""Orders (m, n) of the released KAT rationals: numerator a0..a5, denominator b1..b4 (38 parameters at G = 8)."""


def coefficients_for(
    numerator: torch.Tensor, denominator: torch.Tensor, dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor]:
    """(numerator, denominator) for an input of ``dtype``: cast to that dtype, except that a float16/bfloat16 input
    keeps float32 coefficients (the kernels compute half inputs in float32)."""
    half = dtype == torch.float16 or dtype == torch.bfloat16
    if numerator.dtype != dtype and not (half and numerator.dtype == torch.float32):
        numerator, denominator = numerator.to(dtype), denominator.to(dtype)
    return numerator, denominator


def apply_group_rational(
    x: torch.Tensor, numerator: torch.Tensor, denominator: torch.Tensor, channel_dim: int
) -> torch.Tensor:
    """The op call of :class:`GroupRational`: coefficients follow x's dtype, except that a float16/bfloat16 x keeps
    float32 coefficients (computed in float32, like autocast would).

    Written for every tracer: TorchScript compiles it (no tuple-membership tests; under scripting it calls the
    registered op ``torch.ops.kat_backbones.group_rational_fwd`` directly, as the Python wrapper's checks are not
    scriptable), torch.fx records it as one leaf call (``torch.fx.wrap`` below: its dtype tests would otherwise
    branch on Proxies), and eager / torch.compile / torch.export / ONNX export run the op wrapper
    :func:`kat_backbones.ops.group_rational` (argument checks, fallback, export translation).
    """
    numerator, denominator = coefficients_for(numerator, denominator, x.dtype)
    if torch.jit.is_scripting():
        return torch.ops.kat_backbones.group_rational_fwd(x, numerator, denominator, channel_dim % x.dim())
    return _group_rational_checked_once(x, numerator, denominator, channel_dim)


# Argument configurations already validated for the compiled op -> the channel dim to pass it. The op wrapper's
# Python checks are the largest per-call cost on small inputs (1 to 4 us of a ~20 us call at (1, 197, 192)); they
# depend only on what the key holds, so each configuration is checked once.
_CHECKED: dict[tuple, int] = {}


@torch.jit.unused
def _group_rational_checked_once(
    x: torch.Tensor, numerator: torch.Tensor, denominator: torch.Tensor, channel_dim: int
) -> torch.Tensor:
    if x.dim() and not torch.onnx.is_in_onnx_export():
        key = (x.dtype, x.device, x.dim(), x.shape[channel_dim], channel_dim, numerator.shape, denominator.shape,
               numerator.dtype, denominator.dtype, numerator.device, denominator.device)
        dim = _CHECKED.get(key)
        if dim is not None:
            return torch.ops.kat_backbones.group_rational_fwd.default(x, numerator, denominator, dim)
        dim = compiled_channel_dim(x, numerator, denominator, channel_dim)
        if dim is not None:
            _CHECKED[key] = dim
    return group_rational(x, numerator, denominator, channel_dim=channel_dim)


# a leaf for torch.fx (plain symbolic_trace, timm's and torchvision's feature extractors); must run at module level
torch.fx.wrap("apply_group_rational")


def rational_second_moment(numerator: torch.Tensor, denominator: torch.Tensor) -> float:
    """E[F(x)^2] for x ~ N(0, 1), averaged over the coefficient rows (groups), computed numerically in float64.

    Trapezoid rule on [-12, 12] with step 1e-3 (the kink of ``|x|`` at 0 lies on a grid point); the Gaussian tail
    beyond 12 is below 1e-30, so the result is accurate to ~1e-9 relative for these rationals.

    Args:
        numerator: (1 or G, m+1) coefficients a0..am.
        denominator: (G, n) coefficients b1..bn.
    """
    num = numerator.detach().to("cpu", torch.float64)
    den = denominator.detach().to("cpu", torch.float64)
    groups = den.shape[0]
    num = num.expand(groups, num.shape[1])
    x = torch.linspace(-12.0, 12.0, 24001, dtype=torch.float64)
    pdf = torch.exp(-0.5 * x * x) / (2.0 * torch.pi) ** 0.5
    values = [
        torch.trapezoid(rational_1d(x, num[g], den[g]).square() * pdf, x).item() for g in range(groups)
    ]
    return sum(values) / groups


@register_notrace_module  # also a leaf module for timm's fx tools (features_only with feature_cls='fx')
class GroupRational(nn.Module):
    """Group-rational activation F(x) = P(x) / Q(x) with learnable coefficients, one set per channel group.

    ``P(x) = a0 + a1 x + ... + am x^m``, ``Q(x) = 1 + |b1||x| + ... + |bn||x|^n``; the channels (along
    ``channel_dim``) are split into ``num_groups`` contiguous blocks. Parameter layout matches the released KAT
    checkpoints: ``weight_numerator`` (1, m+1) shared by all groups (or (G, m+1) with ``shared_numerator=False``)
    and ``weight_denominator`` (G, n).

    Args:
        num_groups: number of channel groups G (must divide the channel count). Defaults to 8.
        init: initial function: ``'identity'``, ``'swish'``/``'silu'``, ``'gelu'``, ``'relu'``, ``'tanh'``,
            ``'sigmoid'`` (see ``kat_backbones.layers.rational_init``). Defaults to ``'identity'``.
        order: (m, n), numerator and denominator orders. Defaults to (5, 4).
        shared_numerator: one numerator for all groups (the KAT layout) or one per group. Defaults to True.
        channel_dim: the channel dimension of the input: -1 for tokens (..., C), 1 for (B, C, H, W). Defaults to -1.
        device: parameter device. Defaults to None.
        dtype: parameter dtype. Defaults to None (float32). Keep float32 for mixed precision: half inputs are
            computed in float32 against float32 coefficients.
    """

    def __init__(
        self,
        num_groups: int = DEFAULT_NUM_GROUPS,
        init: str = "identity",
        order: tuple[int, int] = DEFAULT_ORDER,
        shared_numerator: bool = True,
        channel_dim: int = -1,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        if num_groups < 1:
            raise ValueError(f"num_groups must be >= 1, got {num_groups}")
        m, n = (int(v) for v in order)
        self._init_num, self._init_den = get_rational_init(init, (m, n))  # validates init and order
        self.num_groups = num_groups
        self.init = init
        self.order = (m, n)
        self.shared_numerator = shared_numerator
        self.channel_dim = channel_dim
        dd = {"device": device, "dtype": dtype}
        self.weight_numerator = nn.Parameter(torch.empty(1 if shared_numerator else num_groups, m + 1, **dd))
        self.weight_denominator = nn.Parameter(torch.empty(num_groups, n, **dd))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Sets the coefficients to the ``init`` function (every group the same)."""
        if self.weight_numerator.is_meta:
            return
        with torch.no_grad():
            num = torch.tensor(self._init_num, dtype=torch.float64)
            den = torch.tensor(self._init_den, dtype=torch.float64)
            self.weight_numerator.copy_(num.expand_as(self.weight_numerator))
            self.weight_denominator.copy_(den.expand_as(self.weight_denominator))

    def second_moment(self) -> float:
        """E[F(x)^2] for x ~ N(0, 1) under the current coefficients (mean over groups)."""
        return rational_second_moment(self.weight_numerator, self.weight_denominator)

    def __prepare_scriptable__(self) -> GroupRational:
        """torch.jit.script calls this first: the scripted forward calls the registered op, so _C must be loaded."""
        if not available_backends():
            raise RuntimeError(
                "TorchScript needs the compiled op kat_backbones._C, which could not be loaded "
                f"({extension_error()!r}); rebuild with `pip install --no-build-isolation -e .` (eager, torch.compile, "
                "torch.export and ONNX export work without it)"
            )
        return self

    def coefficients(self, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """(numerator, denominator) for an input of ``dtype``: that dtype, except that float16/bfloat16 keep float32
        coefficients (as :func:`apply_group_rational` does); for the fused GR-KAN paths."""
        return coefficients_for(self.weight_numerator, self.weight_denominator, dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Applies F per channel group; coefficients follow x's dtype except that half x keeps float32 ones."""
        return apply_group_rational(x, self.weight_numerator, self.weight_denominator, self.channel_dim)

    def extra_repr(self) -> str:
        return (
            f"num_groups={self.num_groups}, init={self.init!r}, order={self.order}, "
            f"shared_numerator={self.shared_numerator}, channel_dim={self.channel_dim}"
        )
