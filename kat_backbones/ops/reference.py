"""The group-rational function in plain PyTorch: THE formula, float64-capable.

Used by the tests as ground truth and as the fallback when the compiled extension is missing. Every backend computes

    P(x) = a0 + a1 x + ... + am x^m
    Q(x) = 1 + |b1| |x| + ... + |bn| |x|^n
    F(x) = P(x) / Q(x)

with channels split into G contiguous groups along ``channel_dim`` (see ``kat_backbones.ops.group_rational``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

__all__ = ["group_rational_reference", "rational_1d"]


def rational_1d(
    x: torch.Tensor, numerator: Sequence[torch.Tensor], denominator: Sequence[torch.Tensor]
) -> torch.Tensor:
    """F(x) elementwise for one set of coefficients: ``numerator`` a0..am and ``denominator`` b1..bn.

    Each coefficient may be a scalar tensor (1-D coefficient tensors work as sequences) or a tensor that broadcasts
    against x. Autograd-differentiable; used by the reference op, the coefficient fitter and the plotting tools.
    """
    p = numerator[-1]
    for i in range(len(numerator) - 2, -1, -1):
        p = p * x + numerator[i]
    ax = x.abs()
    q = torch.zeros_like(x)
    for j in range(len(denominator) - 1, -1, -1):
        q = (q + denominator[j].abs()) * ax
    return p / (q + 1)


def group_rational_reference(
    x: torch.Tensor,
    numerator: torch.Tensor,
    denominator: torch.Tensor,
    *,
    channel_dim: int = -1,
    upcast: bool = True,
) -> torch.Tensor:
    """Reference group-rational: same signature and semantics as ``kat_backbones.ops.group_rational``.

    Differentiable by autograd. With ``upcast=True`` (default) float16/bfloat16 inputs are computed in float32 and
    returned in x's dtype, like the compiled kernels; ``upcast=False`` computes in x's own dtype (plain eager
    PyTorch at that precision, the yardstick for the kernels' low-precision error in the tests).
    """
    groups = denominator.shape[0]
    dim = channel_dim % x.dim()
    channels = x.shape[dim]
    math = x.dtype if (x.dtype == torch.float64 or not upcast) else torch.float32
    xg = x.to(math).unflatten(dim, (groups, channels // groups))
    trailing = (1,) * (xg.dim() - dim - 1)  # broadcast a (G,) coefficient over (C/G, inner...)
    num = numerator.to(math).expand(groups, numerator.shape[1])
    den = denominator.to(math)
    y = rational_1d(
        xg,
        [num[:, i].reshape(groups, *trailing) for i in range(num.shape[1])],
        [den[:, j].reshape(groups, *trailing) for j in range(den.shape[1])],
    )
    return y.flatten(dim, dim + 1).to(x.dtype)
