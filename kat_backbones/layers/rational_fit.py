"""Fit group-rational coefficients to a target activation, under THE formula of ``kat_backbones.ops``.

    F(x) = (a0 + a1 x + ... + am x^m) / (1 + |b1| |x| + ... + |bn| |x|^n)

The fit runs in float64 on a dense grid in three stages:

1. linearised weighted least squares (``P(x) - f(x) (Q(x) - 1) = f(x)`` is linear in a, b), repeated a few times
   with the residual divided by the previous Q (Loeb / Sanathanan-Koerner iteration);
2. L-BFGS on the true weighted mean squared error of F (with the absolute values);
3. optionally, a minimax polish: L-BFGS on the weighted L^p norm of the error for increasing p, keeping the
   coefficients with the smallest maximum error.

``tools/fit_rational.py`` is the command-line face of :func:`fit_rational`; the packaged init table
(``kat_backbones.layers.rational_init``) was produced with it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F

from kat_backbones.ops import rational_1d

__all__ = ["ACTIVATIONS", "RationalFit", "fit_rational", "max_abs_error", "get_activation"]


def _gelu_tanh(x: torch.Tensor) -> torch.Tensor:
    return F.gelu(x, approximate="tanh")


def _leaky_relu(x: torch.Tensor) -> torch.Tensor:
    return F.leaky_relu(x, 0.01)


ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "identity": lambda x: x,
    "swish": F.silu,
    "silu": F.silu,
    "gelu": F.gelu,
    "gelu_tanh": _gelu_tanh,
    "relu": F.relu,
    "leaky_relu": _leaky_relu,
    "tanh": torch.tanh,
    "sigmoid": torch.sigmoid,
    "softplus": F.softplus,
    "elu": F.elu,
    "mish": F.mish,
}
"""Target activations known by name (each maps a float64 tensor elementwise)."""


def get_activation(name: str) -> Callable[[torch.Tensor], torch.Tensor]:
    """Returns the target activation called ``name`` (one of :data:`ACTIVATIONS`)."""
    try:
        return ACTIVATIONS[name.lower()]
    except KeyError:
        raise ValueError(f"unknown activation {name!r}; known: {sorted(ACTIVATIONS)}") from None


@dataclass
class RationalFit:
    """Result of :func:`fit_rational`.

    Attributes:
        numerator: a0..am.
        denominator: b1..bn (their signs are irrelevant under the formula; they are kept as fitted).
        max_error: max |F - f| on the evaluation range (default [-3, 3]).
        rms_error: root-mean-square error on the evaluation range.
        eval_range: the evaluation range.
    """

    numerator: list[float]
    denominator: list[float]
    max_error: float
    rms_error: float
    eval_range: tuple[float, float]


def _evaluate(x: torch.Tensor, num: torch.Tensor, den: torch.Tensor) -> torch.Tensor:
    return rational_1d(x, num, den)


def max_abs_error(
    fn: Callable[[torch.Tensor], torch.Tensor] | str,
    numerator: list[float] | torch.Tensor,
    denominator: list[float] | torch.Tensor,
    lo: float = -3.0,
    hi: float = 3.0,
    num_points: int = 60001,
) -> float:
    """Max |F(x) - fn(x)| over a dense float64 grid on [lo, hi] under the group-rational formula."""
    target = get_activation(fn) if isinstance(fn, str) else fn
    x = torch.linspace(lo, hi, num_points, dtype=torch.float64)
    num = torch.as_tensor(numerator, dtype=torch.float64).flatten()
    den = torch.as_tensor(denominator, dtype=torch.float64).flatten()
    return (_evaluate(x, num, den) - target(x)).abs().max().item()


def _weights(x: torch.Tensor, weighting: Literal["uniform", "gaussian"]) -> torch.Tensor:
    if weighting == "uniform":
        w = torch.ones_like(x)
    elif weighting == "gaussian":
        w = torch.exp(-0.5 * x * x)
    else:
        raise ValueError(f"weighting must be 'uniform' or 'gaussian', got {weighting!r}")
    return w / w.mean()


def _linearised_init(x: torch.Tensor, f: torch.Tensor, w: torch.Tensor, m: int, n: int, iters: int = 8):
    """Sanathanan-Koerner iterations of the linearised problem P(x) - f(x) (Q(x) - 1) = f(x)."""
    ax = x.abs()
    cols_p = torch.stack([x**i for i in range(m + 1)], dim=1)
    cols_q = torch.stack([-f * ax ** (j + 1) for j in range(n)], dim=1) if n else x.new_zeros(x.shape[0], 0)
    design = torch.cat([cols_p, cols_q], dim=1)
    q = torch.ones_like(x)
    best = None
    for _ in range(iters):
        row_w = (w.sqrt() / q).unsqueeze(1)
        sol = torch.linalg.lstsq(design * row_w, (f * row_w.squeeze(1)).unsqueeze(1), driver="gelsd").solution[:, 0]
        num, den = sol[: m + 1], sol[m + 1 :]
        # Under the formula the denominator uses |b_j|; a negative b_j changes the function, so judge each iterate
        # by its true error and keep the best.
        err = (w * (_evaluate(x, num, den) - f) ** 2).mean().item()
        if best is None or err < best[0]:
            best = (err, num.clone(), den.clone())
        q = 1 + sum(den[j].abs() * ax ** (j + 1) for j in range(n)) if n else torch.ones_like(x)
    return best[1], best[2]


def _lbfgs(params: torch.Tensor, loss_fn: Callable[[torch.Tensor], torch.Tensor], max_iter: int) -> torch.Tensor:
    p = params.clone().requires_grad_(True)
    opt = torch.optim.LBFGS(
        [p], lr=1.0, max_iter=max_iter, history_size=50, tolerance_grad=1e-16, tolerance_change=1e-20,
        line_search_fn="strong_wolfe",
    )

    def closure():
        opt.zero_grad()
        loss = loss_fn(p)
        if torch.isfinite(loss):
            loss.backward()
        return loss

    opt.step(closure)
    return p.detach()


def fit_rational(
    fn: Callable[[torch.Tensor], torch.Tensor] | str,
    order: tuple[int, int] = (5, 4),
    fit_range: tuple[float, float] = (-3.0, 3.0),
    weighting: Literal["uniform", "gaussian"] = "uniform",
    num_points: int = 4001,
    max_iter: int = 2000,
    minimax: bool = True,
    eval_range: tuple[float, float] = (-3.0, 3.0),
) -> RationalFit:
    """Fits (m, n) = ``order`` group-rational coefficients to ``fn`` on ``fit_range``.

    Args:
        fn: the target activation, a name from :data:`ACTIVATIONS` or a float64 elementwise callable.
        order: (m, n), the numerator and denominator orders. Defaults to (5, 4).
        fit_range: the interval the fit sees. Defaults to (-3, 3).
        weighting: ``'uniform'`` or ``'gaussian'`` (weights exp(-x^2/2), emphasising the bulk of N(0, 1) inputs).
            Defaults to ``'uniform'``.
        num_points: grid points on ``fit_range``. Defaults to 4001.
        max_iter: L-BFGS iterations of the least-squares stage. Defaults to 2000.
        minimax: polish the fit towards the smallest maximum error (weighted L^p with growing p). Defaults to True.
        eval_range: where the reported errors are measured. Defaults to (-3, 3).

    Returns:
        The coefficients and their max / rms errors on ``eval_range``.
    """
    target = get_activation(fn) if isinstance(fn, str) else fn
    m, n = order
    if m < 0 or n < 0:
        raise ValueError(f"orders must be non-negative, got {order}")
    lo, hi = fit_range
    if not lo < hi:
        raise ValueError(f"fit_range must satisfy lo < hi, got {fit_range}")
    x = torch.linspace(lo, hi, num_points, dtype=torch.float64)
    f = target(x)
    w = _weights(x, weighting)

    num, den = _linearised_init(x, f, w, m, n)
    params = torch.cat([num, den])

    def split(p: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return p[: m + 1], p[m + 1 :]

    def mse(p: torch.Tensor) -> torch.Tensor:
        return (w * (_evaluate(x, *split(p)) - f) ** 2).mean()

    params = _lbfgs(params, mse, max_iter)

    def max_err(p: torch.Tensor) -> float:
        return ((_evaluate(x, *split(p)) - f).abs() * (w > 1e-3)).max().item()

    if minimax:
        best, best_err = params, max_err(params)
        for power in (4, 8, 16, 32, 64, 128, 256, 512):
            scale = max(best_err, 1e-300)

            def lp(p: torch.Tensor, power: int = power, scale: float = scale) -> torch.Tensor:
                e = ((_evaluate(x, *split(p)) - f).abs() / scale) * w ** (1.0 / power)
                return torch.logsumexp(power * torch.log(e + 1e-300), dim=0) / power - math.log(x.numel()) / power

            candidate = _lbfgs(best, lp, max_iter // 4)
            err = max_err(candidate)
            if math.isfinite(err) and err < best_err:
                best, best_err = candidate, err
        params = best

    num, den = split(params)
    xe = torch.linspace(eval_range[0], eval_range[1], 60001, dtype=torch.float64)
    err = _evaluate(xe, num, den) - target(xe)
    return RationalFit(
        numerator=num.tolist(),
        denominator=den.tolist(),
        max_error=err.abs().max().item(),
        rms_error=err.pow(2).mean().sqrt().item(),
        eval_range=(float(eval_range[0]), float(eval_range[1])),
    )
