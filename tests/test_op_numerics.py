"""One formula everywhere: the fallback's gradients at x = 0 and b = 0, and F finite and accurate for every finite x.

Exact references are computed with Python fractions (rational arithmetic on the exact binary value of each input),
so they hold for inputs up to the float64 maximum, where float64 evaluation itself overflows.
"""

from __future__ import annotations

import math
from fractions import Fraction

import pytest
import torch

from kat_backbones.layers import KAN
from kat_backbones.layers.rational_init import get_rational_init
from kat_backbones.ops import group_rational, group_rational_reference, large_x_threshold, rational_op
from tests.conftest import DEVICES

BACKENDS = ["kernel", "fallback"]


def _run(backend, x, num, den, **kw):
    fn = group_rational if backend == "kernel" else group_rational_reference
    return fn(x, num, den, **kw)


# ------------------------------------------------------------------------------------------- x = 0 and b = 0
@pytest.mark.parametrize("device", DEVICES)
def test_fallback_gradients_match_kernel_at_zero(device):
    """Values and all three gradients at x = 0 and b_j = 0 (and around them): fallback == compiled op."""
    dd = dict(dtype=torch.float64, device=device)
    x = torch.tensor([[0.0, -0.0, 0.0, 1e-300, -1e-300, 0.5, -0.5, 0.0] * 2], **dd).reshape(2, 8)
    num = torch.tensor([[0.1, 0.9, 0.2, -0.1, 0.05, 0.01]], **dd)
    den = torch.tensor([[0.0, 0.0, 0.0, 0.0], [0.0, -0.3, 0.0, 0.1]], **dd)  # identity-like b = 0 and mixed signs
    gy = torch.linspace(-1, 1, x.numel(), **dd).reshape(x.shape)
    results = []
    for backend in BACKENDS:
        leaves = [t.clone().requires_grad_(True) for t in (x, num, den)]
        y = _run(backend, *leaves)
        results.append((y, *torch.autograd.grad(y, leaves, gy)))
    for name, a, b in zip(("y", "dx", "dnum", "dden"), *results):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-15, msg=lambda s, name=name: f"{name}: {s}")
    # The subgradient sign(0) = +1: at b = 0, dF/db_1 = -sum g P(x) |x| / Q^2 (nonzero), not autograd's 0.
    assert results[1][3][0, 0] != 0
    # ... and at x = 0: dF/dx = (a1 - F * |b1|) / Q with sign(0) = +1.
    dx0 = results[1][1][0, 0] / gy[0, 0]
    assert dx0.item() == pytest.approx(0.9 - 0.1 * 0.0)


@pytest.mark.parametrize("extension", [True, False], ids=["compiled", "fallback"])
def test_identity_act1_denominators_learn(monkeypatch, extension):
    """A GR-KAN layer whose act1 starts as the identity (b = 0) updates act1's denominators, with or without _C."""
    if not extension:
        # Simulate a missing extension in-process: the op wrapper then takes the pure-PyTorch fallback.
        monkeypatch.setattr(rational_op, "_EXT_ERROR", ImportError("simulated: kat_backbones._C missing"))
        monkeypatch.setattr(rational_op, "_warned_fallback", True)
    torch.manual_seed(0)
    layer = KAN(16, 32, num_groups=4)
    assert torch.all(layer.act1.weight_denominator == 0)
    opt = torch.optim.SGD(layer.parameters(), lr=0.1)
    x = torch.randn(4, 10, 16)
    layer(x).square().mean().backward()
    grad = layer.act1.weight_denominator.grad.clone()
    opt.step()
    assert torch.all(grad != 0), grad
    assert torch.all(layer.act1.weight_denominator != 0)
    if not extension:
        # Same gradient as the compiled op.
        monkeypatch.undo()
        torch.manual_seed(0)
        layer2 = KAN(16, 32, num_groups=4)
        layer2(x).square().mean().backward()
        torch.testing.assert_close(grad, layer2.act1.weight_denominator.grad, rtol=1e-4, atol=1e-7)


# ------------------------------------------------------------------------------------ every finite x, exactly
def _exact(xv: float, a: list[float], b: list[float]):
    """Exact F, dF/dx, dF/da_i and dF/db_j (sign(0) = +1) at one point, as Fractions."""
    x = Fraction(xv)
    ax = abs(x)
    sg = -1 if x < 0 else 1
    p = sum(Fraction(ai) * x**i for i, ai in enumerate(a))
    q = 1 + sum(abs(Fraction(bj)) * ax ** (j + 1) for j, bj in enumerate(b))
    dp = sum(i * Fraction(ai) * x ** (i - 1) for i, ai in enumerate(a) if i)
    dq = sg * sum((j + 1) * abs(Fraction(bj)) * ax**j for j, bj in enumerate(b))
    f = p / q
    # Error scales of a floating-point evaluation (the sums of the terms' magnitudes): Horner for F, and the
    # cancellation in P'/Q - F Q'/Q for dF/dx.
    scale = sum(abs(Fraction(ai)) * ax**i for i, ai in enumerate(a)) / q
    dscale = (sum(i * abs(Fraction(ai)) * ax ** (i - 1) for i, ai in enumerate(a) if i) + abs(f) * abs(dq)) / q
    da = [x**i / q for i in range(len(a))]
    db = [-f * (-1 if bj < 0 else 1) * ax ** (j + 1) / q for j, bj in enumerate(b)]
    return f, (dp - f * dq) / q, scale, dscale, da, db


def _coefficient_sets():
    swish = get_rational_init("swish", (5, 4))
    gelu = get_rational_init("gelu", (5, 4))
    return {
        "identity": ([0.0, 1.0, 0.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]),
        "swish": (list(swish[0]), list(swish[1])),
        "gelu": (list(gelu[0]), [-v for v in gelu[1]]),  # negative b: |b| in Q
        "zero-leading": ([0.3, -0.7, 0.2, 0.0, 0.0, 0.0], [0.5, 0.0, 0.0, 0.0]),  # m' = 2, n' = 1
        "n>m": ([0.2, 1.5, -0.4, 0.0, 0.0, 0.0], [0.1, 0.3, 0.0, 2.0]),  # F -> 0 like 1/x^2
    }


COEFFS = _coefficient_sets()


def _grid(dtype: torch.dtype) -> list[float]:
    """0, +-tiny, a log grid through the dtype's whole range, the largest finite value and the large-|x|
    threshold's neighbours (both evaluations meet there)."""
    fi = torch.finfo(dtype)
    lo, hi = math.log2(fi.smallest_normal) - 10, math.frexp(fi.max)[1] - 1
    mags = [2.0 ** (lo + (hi - lo) * k / 40) for k in range(41)] + [fi.max, fi.tiny, 1.0, 3.0]
    big = large_x_threshold(torch.float64 if dtype == torch.float64 else torch.float32, 5, 4)
    mags += [big * 0.999, big, big * 1.001]
    vals = [0.0] + [s * v for v in mags for s in (1.0, -1.0)]
    return [v for v in torch.tensor(vals, dtype=torch.float64).to(dtype).double().tolist() if math.isfinite(v)]


TOL = {torch.float64: 1e-13, torch.float32: 2e-6, torch.float16: 1e-3, torch.bfloat16: 8e-3}


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("coeffs", list(COEFFS), ids=str)
def test_finite_and_accurate_for_every_finite_x(device, backend, dtype, coeffs):
    """F and dF/dx against the exact value for x across the dtype's whole finite range: finite wherever the exact
    value is representable (dF/dx: wherever F is), within a few units of rounding of it (relative to Horner's error
    scale). The gelu init has |b_4| ~ 1e-11, so its F overflows float32 long before x does."""
    a, b = COEFFS[coeffs]
    xs = _grid(dtype)
    coef_dtype = torch.float64 if dtype == torch.float64 else torch.float32
    x = torch.tensor(xs, dtype=torch.float64).to(device=device, dtype=dtype).requires_grad_(True)
    num = torch.tensor([a], dtype=coef_dtype, device=device)
    den = torch.tensor([b], dtype=coef_dtype, device=device)
    y = _run(backend, x, num, den)
    (dx,) = torch.autograd.grad(y, x, torch.ones_like(y))
    fi = torch.finfo(dtype)
    math_max = torch.finfo(coef_dtype).max
    tol = TOL[dtype]
    for k, xv in enumerate(xs):
        f, d, scale, dscale, _, _ = _exact(xv, a, b)
        checks = [("F", y[k], f, max(abs(f), scale))]
        if abs(f) <= fi.max:  # dF/dx where F is representable (an overflowed F has no meaningful gradient)
            checks.append(("dF/dx", dx[k], d, max(abs(d), dscale)))
        for name, got, want, ref_scale in checks:
            got, limit = got.item(), fi.max
            if abs(want) > limit:  # not representable: only the sign of the overflow is checked
                assert math.isinf(got) or abs(got) >= limit / 2, (name, xv, got, float(want))
                continue
            assert math.isfinite(got), (name, xv, got, float(want))
            err = abs(Fraction(got) - want)
            # Relative error; absolute near zero or underflow (the smallest normal of the output dtype).
            assert err <= tol * ref_scale + fi.smallest_normal or float(ref_scale) > math_max, (
                name, xv, got, float(want), float(err / max(ref_scale, Fraction(fi.smallest_normal))))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=str)
def test_coefficient_gradients_for_large_x(device, backend, dtype):
    """dF/da_i and dF/db_j summed over huge and ordinary x (several CPU work items: the large-|x| redo pass) match
    the exact sums, and huge elements do not disturb the others."""
    a, b = COEFFS["swish"]
    torch.manual_seed(0)
    base = torch.randn(3, 4096, 8, dtype=torch.float64)
    huge = [1e6, -3e9, 2e15, -1e20, 3e25]
    for i, v in enumerate(huge):
        base[2 - i % 3, 1000 * i + 7, i % 8] = v
    x = base.to(device=device, dtype=dtype).requires_grad_(True)
    num = torch.tensor([a], dtype=dtype, device=device).requires_grad_(True)
    den = torch.tensor([b] * 2, dtype=dtype, device=device).requires_grad_(True)  # 2 groups of 4 channels
    y = _run(backend, x, num, den)
    gy = torch.ones_like(y)
    dx, dnum, dden = torch.autograd.grad(y, (x, num, den), gy)
    assert torch.isfinite(y).all() and torch.isfinite(dx).all()
    assert torch.isfinite(dnum).all() and torch.isfinite(dden).all()
    # Exact sums over the huge elements plus float64 sums over the ordinary ones.
    ordinary = base.abs() < 1e5
    exact_num = [Fraction(0)] * 6
    exact_den = [[Fraction(0)] * 4 for _ in range(2)]
    for idx in (~ordinary).nonzero().tolist():
        xv = base[tuple(idx)].item()
        _, _, _, _, da, db = _exact(xv, a, b)
        exact_num = [u + v for u, v in zip(exact_num, da)]
        g = idx[2] // 4
        exact_den[g] = [u + v for u, v in zip(exact_den[g], db)]
    # Gradients of the ordinary part, from the float64 reference on those elements only.
    xo = torch.where(ordinary, base, torch.zeros_like(base))
    leaves = [xo, torch.tensor([a], dtype=torch.float64).requires_grad_(True),
              torch.tensor([b] * 2, dtype=torch.float64).requires_grad_(True)]
    yo = group_rational_reference(*leaves)
    on, od = torch.autograd.grad(yo, leaves[1:], ordinary.double())
    want_num = [float(e) + o for e, o in zip(exact_num, on[0].tolist())]
    want_den = [[float(e) + o for e, o in zip(exact_den[g], od[g].tolist())] for g in range(2)]
    scale = {torch.float64: 1e-12, torch.float32: 1e-5}[dtype]
    for got, want in zip(dnum[0].tolist(), want_num):
        assert abs(got - want) <= scale * abs(want) + 1e-3 * scale, (got, want)
    for g in range(2):
        for got, want in zip(dden[g].tolist(), want_den[g]):
            assert abs(got - want) <= scale * abs(want) + 1e-3 * scale, (g, got, want)
