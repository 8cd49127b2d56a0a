"""The group-rational function in plain PyTorch: THE formula, float64-capable.

Every backend computes

    P(x) = a0 + a1 x + ... + am x^m
    Q(x) = 1 + |b1| |x| + ... + |bn| |x|^n
    F(x) = P(x) / Q(x)

with channels split into G contiguous groups along ``channel_dim`` (see ``kat_backbones.ops.group_rational``), and the
gradients

    dF/dx   = P'(x)/Q - P(x) Q'(x)/Q^2,   Q'(x) = sign(x) (|b1| + 2|b2||x| + ... + n|bn||x|^(n-1))
    dF/da_i = x^i / Q
    dF/db_j = -(P/Q^2) sign(b_j) |x|^j

with the subgradient sign(0) = +1 for both |x| and |b_j| (autograd's derivative of ``abs`` at 0 is 0, which would
freeze b = 0 -- the identity init of act1 -- forever).

For large |x| (above :func:`large_x_threshold`) P and Q are evaluated in 1/x, as the compiled kernels do
(``csrc/group_rational_large_x.h`` has the derivation): direct evaluation overflows there (float32, orders (5, 4):
|x| >~ 1e8 gives inf/inf = NaN) although F is finite. With the effective orders m' (highest i with a_i != 0) and
n' (highest j with b_j != 0), s = 1/|x| and t = 1/x:

    Ha = sum_{i<=m'} a_i t^(m'-i) = P(x) / x^m',   Hb = s^n' + sum_{j<=n'} |b_j| s^(n'-j) = Q(x) / |x|^n'
    F  = sign(x)^m' |x|^(m'-n') Ha / Hb

This module holds :func:`group_rational_reference` (the fallback when ``kat_backbones._C`` is missing: an autograd
Function with the kernels' gradients, both evaluations), :func:`group_rational_decomposed` (forward only, direct
evaluation in standard tensor ops: what ONNX export records) and :func:`rational_1d` (direct evaluation of one
coefficient set for moderate |x|, autograd-differentiable: plots, fits, moments).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import torch

__all__ = ["group_rational_reference", "group_rational_decomposed", "rational_1d", "large_x_threshold"]


def _abs(t: torch.Tensor) -> torch.Tensor:
    """|t| whose autograd derivative is sign(t) with sign(0) = +1 (the kernels' convention)."""
    return torch.where(t < 0, -t, t)


def rational_1d(
    x: torch.Tensor, numerator: Sequence[torch.Tensor], denominator: Sequence[torch.Tensor]
) -> torch.Tensor:
    """F(x) elementwise for one set of coefficients: ``numerator`` a0..am and ``denominator`` b1..bn.

    Each coefficient may be a scalar tensor (1-D coefficient tensors work as sequences) or a tensor that broadcasts
    against x. Direct Horner evaluation, autograd-differentiable with the op's subgradient sign(0) = +1; meant for
    moderate |x| (below :func:`large_x_threshold`, e.g. |x| < 4096 in float32 for orders (5, 4)): used by the
    coefficient fitter, the plotting tools and the second-moment integral.
    """
    p = numerator[-1]
    for i in range(len(numerator) - 2, -1, -1):
        p = p * x + numerator[i]
    ax = _abs(x)
    q = torch.zeros_like(x)
    for j in range(len(denominator) - 1, -1, -1):
        q = (q + _abs(denominator[j])) * ax
    return p / (q + 1)


def large_x_threshold(dtype: torch.dtype, m: int, n: int) -> float:
    """|x| above which F is evaluated in 1/x when computing in ``dtype`` with orders (m, n).

    ``2 ** (E // (2k))``, E the dtype's largest binary exponent (128 for float32, 1024 for float64), k = max(m, n, 1):
    below it |x|^k <= 2^(E/2), so direct evaluation cannot overflow for coefficient sums up to ~2^(E/2 - 4).
    Orders (5, 4): 4096 in float32/bfloat16 math, 2^102 in float64. Same rule as the compiled kernels.
    """
    max_exponent = math.frexp(torch.finfo(dtype).max)[1]
    return 2.0 ** (max_exponent // (2 * max(m, n, 1)))


def _tracing() -> bool:
    """True while a graph is being captured (torch.compile, torch.export, jit.trace, ONNX export): no data-dependent
    Python branches then, both evaluation paths are recorded and selected per element."""
    return torch.compiler.is_compiling() or torch.jit.is_tracing() or torch.onnx.is_in_onnx_export()


class _Terms:
    """Coefficients of a (.., G, C/G, inner..) view as per-group tensors that broadcast against it."""

    def __init__(self, numerator: torch.Tensor, denominator: torch.Tensor, gdim: int, ndim: int) -> None:
        groups, n = denominator.shape
        m = numerator.shape[1] - 1
        self.m, self.n = m, n
        self.shape = (groups,) + (1,) * (ndim - gdim - 1)
        self.num = numerator.expand(groups, m + 1)
        self.den_abs = denominator.abs()
        self.a = self._cols(self.num)
        self.babs = self._cols(self.den_abs)

    def _cols(self, table: torch.Tensor) -> list[torch.Tensor]:
        return [table[:, k].reshape(self.shape) for k in range(table.shape[1])]

    def _order(self, table: torch.Tensor, first: int) -> torch.Tensor:
        """Per group, the highest index (the first column counting as ``first``) with a nonzero entry, 0 if none."""
        if table.shape[1] == 0:
            return torch.zeros(self.shape, dtype=torch.long, device=table.device)
        idx = torch.arange(first, first + table.shape[1], device=table.device)
        return torch.where(table != 0, idx, 0).amax(1).reshape(self.shape)

    @functools.cached_property
    def me(self) -> torch.Tensor:
        """Effective numerator order m': highest i with a_i != 0 (0 if none), per group."""
        return self._order(self.num, 0)

    @functools.cached_property
    def ne(self) -> torch.Tensor:
        """Effective denominator order n': highest j with b_j != 0 (0 if none), per group."""
        return self._order(self.den_abs, 1)


def _pow_abs(v: torch.Tensor, d: torch.Tensor, ax: torch.Tensor, s: torch.Tensor, steps: int) -> torch.Tensor:
    """v |x|^d for a per-group integer d with |d| <= steps, by repeated multiplication with |x| or 1/|x|."""
    for k in range(1, steps + 1):
        v = torch.where(d >= k, v * ax, torch.where(d <= -k, v * s, v))
    return v


def _direct(x: torch.Tensor, terms: _Terms) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """P(x) (full shape when m >= 1), Q(x) and |x| by Horner in x."""
    a, babs = terms.a, terms.babs
    p = a[-1]
    for i in range(terms.m - 1, -1, -1):
        p = p * x + a[i]
    ax = x.abs()
    q = torch.zeros_like(x)
    for j in range(terms.n - 1, -1, -1):
        q = (q + babs[j]) * ax
    return p, q + 1, ax


class _Large:
    """The evaluation in 1/x (meaningful where |x| > 1; other elements hold garbage the callers never select)."""

    def __init__(self, x: torch.Tensor, terms: _Terms) -> None:
        one = torch.ones((), dtype=x.dtype, device=x.device)
        m, n, me, ne = terms.m, terms.n, terms.me, terms.ne
        self.terms, self.x, self.neg = terms, x, x < 0
        self.sg = torch.where(self.neg, -one, one)
        self.ax = x * self.sg
        self.s = torch.reciprocal(self.ax)
        self.t = self.s * self.sg
        self.steps = max(m, n) + 1
        ha = terms.a[0]
        for i in range(1, m + 1):
            ha = torch.where(me >= i, ha * self.t + terms.a[i], ha)
        hb = torch.ones_like(x)
        for j in range(1, n + 1):
            hb = torch.where(ne >= j, hb * self.s + terms.babs[j - 1], hb)
        self.hb = hb
        f = self.pow_abs(ha / hb, me - ne)
        self.f = torch.where((me % 2 == 1) & self.neg, -f, f)

    def pow_abs(self, v: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
        return _pow_abs(v, d, self.ax, self.s, self.steps)

    def flip(self, v: torch.Tensor, power: torch.Tensor) -> torch.Tensor:
        """v sign(x)^power."""
        return torch.where((power % 2 == 1) & self.neg, -v, v)

    def backward(self, g: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor], list[torch.Tensor]]:
        """g dF/dx, and g dF/da_i (i = 0..m) and -g F |x|^j / Q (j = 1..n) per element."""
        terms, x = self.terms, self.x
        m, n, me, ne = terms.m, terms.n, terms.me, terms.ne
        r = g / self.hb
        term = torch.zeros_like(x)
        if m >= 1:  # P'(x) / |x|^n' = sign^(m'-1) |x|^(m'-1-n') Da
            da = terms.a[1]
            for i in range(2, m + 1):
                da = torch.where(me >= i, da * self.t + i * terms.a[i], da)
            term = torch.where(me >= 1, self.flip(self.pow_abs(da, me - 1 - ne), me - 1), term)
        if n >= 1:  # F Q'(x) / |x|^n' = F sign s Db
            db = terms.babs[0]
            for j in range(2, n + 1):
                db = torch.where(ne >= j, db * self.s + j * terms.babs[j - 1], db)
            term = term - torch.where(ne >= 1, self.f * self.sg * self.s * db, 0)
        dx = r * term
        # a_i: x^i / Q = sign^i |x|^(i-n') / Hb, walked outwards from the pivot i0 = min(n', m).
        i0 = ne.clamp(max=m)
        piv = self.flip(self.pow_abs(r, i0 - ne), i0)
        ca = _walk(piv, i0, m + 1, 0, x, self.t)
        # b_j: -F |x|^j / Q = -F |x|^(j-n') / Hb, walked outwards from j0 = max(n', 1).
        cb = []
        if n >= 1:
            j0 = ne.clamp(min=1)
            cb = _walk(self.pow_abs(-r * self.f, j0 - ne), j0, n + 1, 1, self.ax, self.s)
        return dx, ca, cb


def _walk(piv: torch.Tensor, i0: torch.Tensor, stop: int, start: int, up: torch.Tensor, down: torch.Tensor):
    """Values c_i for i in [start, stop) with c_i0 = piv, c_(i+1) = c_i * up above i0 and c_(i-1) = c_i * down below."""
    ups, downs = [], [None] * (stop - start)
    cur = piv
    for i in range(start, stop):
        cur = piv if i == start else torch.where(i0 == i, piv, cur * up)
        ups.append(cur)
    cur = piv
    for i in range(stop - 1, start - 1, -1):
        cur = piv if i == stop - 1 else torch.where(i0 == i, piv, cur * down)
        downs[i - start] = cur
    return [torch.where(i0 <= i, u, d) for i, u, d in zip(range(start, stop), ups, downs)]


def _forward(x: torch.Tensor, terms: _Terms, both_paths: bool) -> torch.Tensor:
    p, q, ax = _direct(x, terms)
    f = p / q
    large = ax > large_x_threshold(x.dtype, terms.m, terms.n)
    if both_paths or bool(large.any()):
        f = torch.where(large, _Large(x, terms).f, f)
    return f


def _backward(g: torch.Tensor, x: torch.Tensor, terms: _Terms, gdim: int, both_paths: bool):
    """g dF/dx and the per-group sums of g dF/da_i (G, m+1) and g dF/d|b_j| (G, n)."""
    m, n = terms.m, terms.n
    p, q, ax = _direct(x, terms)
    r = g / q
    f = p / q
    dp = torch.zeros_like(x)
    for i in range(m, 0, -1):
        dp = dp * x + i * terms.a[i]
    dq = torch.zeros_like(x)
    for j in range(n, 0, -1):
        dq = dq * ax + j * terms.babs[j - 1]
    dx = r * (dp - f * torch.where(x < 0, -dq, dq))
    ca = [r]
    for _ in range(m):
        ca.append(ca[-1] * x)
    cb = []
    pb = -r * f
    for _ in range(n):
        pb = pb * ax
        cb.append(pb)
    large = ax > large_x_threshold(x.dtype, m, n)
    if both_paths or bool(large.any()):
        dx_l, ca_l, cb_l = _Large(x, terms).backward(g)
        dx = torch.where(large, dx_l, dx)
        ca = [torch.where(large, u, v) for u, v in zip(ca_l, ca)]
        cb = [torch.where(large, u, v) for u, v in zip(cb_l, cb)]
    dims = [d for d in range(x.dim()) if d != gdim]
    # Sums in float64, like the kernels' partial sums (many elements: float32 sums would lose digits).
    dnum = torch.stack([c.sum(dims, dtype=torch.float64) for c in ca], 1).to(x.dtype)
    dden = torch.stack([c.sum(dims, dtype=torch.float64) for c in cb], 1).to(x.dtype) if n else x.new_zeros(
        terms.den_abs.shape)
    return dx, dnum, dden


class _GroupRationalFunction(torch.autograd.Function):
    """F on the grouped view (.., G, C/G, inner..) with the kernels' gradients (explicit backward)."""

    @staticmethod
    def forward(xg: torch.Tensor, numerator: torch.Tensor, denominator: torch.Tensor, gdim: int) -> torch.Tensor:
        return _forward(xg, _Terms(numerator, denominator, gdim, xg.dim()), _tracing())

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:
        xg, numerator, denominator, gdim = inputs
        ctx.save_for_backward(xg, numerator, denominator)
        ctx.gdim = gdim

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        xg, numerator, denominator = ctx.saved_tensors
        if not any(ctx.needs_input_grad[:3]):
            return None, None, None, None
        terms = _Terms(numerator, denominator, ctx.gdim, xg.dim())
        dx, dnum, dden = _backward(grad, xg, terms, ctx.gdim, _tracing())
        if numerator.shape[0] == 1:
            dnum = dnum.sum(0, keepdim=True)
        dden = torch.where(denominator < 0, -dden, dden)
        return (
            dx if ctx.needs_input_grad[0] else None,
            dnum if ctx.needs_input_grad[1] else None,
            dden if ctx.needs_input_grad[2] else None,
            None,
        )


def _grouped(x: torch.Tensor, numerator: torch.Tensor, denominator: torch.Tensor, channel_dim: int, upcast: bool):
    groups = denominator.shape[0]
    dim = channel_dim % x.dim()
    math = x.dtype if (x.dtype == torch.float64 or not upcast) else torch.float32
    xg = x.to(math).unflatten(dim, (groups, x.shape[dim] // groups))
    return xg, numerator.to(math), denominator.to(math), dim


def group_rational_reference(
    x: torch.Tensor,
    numerator: torch.Tensor,
    denominator: torch.Tensor,
    *,
    channel_dim: int = -1,
    upcast: bool = True,
) -> torch.Tensor:
    """Reference group-rational: same signature, semantics and gradients as ``kat_backbones.ops.group_rational``.

    The fallback when the compiled extension is missing. Finite for every finite x (the evaluation in 1/x above
    :func:`large_x_threshold`; in eager mode only when some element needs it), differentiable in x, numerator and
    denominator with the kernels' formulas (sign(0) = +1). With ``upcast=True`` (default) float16/bfloat16 inputs
    are computed in float32 and returned in x's dtype, like the compiled kernels; ``upcast=False`` computes in x's
    own dtype (plain eager PyTorch at that precision, the yardstick for the kernels' low-precision error in the
    tests).
    """
    xg, num, den, dim = _grouped(x, numerator, denominator, channel_dim, upcast)
    y = _GroupRationalFunction.apply(xg, num, den, dim)
    return y.flatten(dim, dim + 1).to(x.dtype)


def group_rational_decomposed(
    x: torch.Tensor, numerator: torch.Tensor, denominator: torch.Tensor, *, channel_dim: int = -1
) -> torch.Tensor:
    """Forward of the op as direct Horner evaluation in standard tensor operations (abs, mul, add, div): what ONNX
    export records, so that the graph holds no custom operator and runs in any ONNX runtime.

    float16/bfloat16 are computed in float32 like the kernels. It equals the op wherever |x| is below the op's
    large-|x| threshold (:func:`large_x_threshold`, 4096 in float32 for orders (5, 4)) and agrees to rounding up to
    the overflow of |x|^max(m, n) (float32, orders (5, 4): |x| ~ 1e7..1e8). Beyond, where the op switches to its
    evaluation in 1/x, this direct form gives inf/NaN: recording both paths and a per-element select would more than
    double the rational's share of the graph and of the runtime's work for inputs no trained model produces. Not for
    training (no gradient convention; use :func:`group_rational_reference`).
    """
    xg, num, den, dim = _grouped(x, numerator, denominator, channel_dim, True)
    p, q, _ = _direct(xg, _Terms(num, den, dim, xg.dim()))
    return (p / q).flatten(dim, dim + 1).to(x.dtype)
