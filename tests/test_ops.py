"""The group-rational op against THE formula: values, gradients, registration, compile, determinism, bad input."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from kat_backbones.ops import available_backends, group_rational, group_rational_reference
from tests.conftest import DEVICES, FLOAT_DTYPES, RTOL

OPS = torch.ops.kat_backbones


def make_inputs(shape, groups, m=5, n=4, *, shared=True, channel_dim=-1, dtype=torch.float32, coef_dtype=None,
                device="cpu", contiguous=True, requires_grad=False, scale=2.0):
    """x ~ N(0, scale^2) plus coefficients of a KAT-like size; non-contiguous x via a transposed buffer."""
    if contiguous:
        x = torch.randn(shape, dtype=torch.float64) * scale
    else:
        x = (torch.randn(tuple(reversed(shape)), dtype=torch.float64) * scale).permute(
            *reversed(range(len(shape))))
    num = torch.randn(1 if shared else groups, m + 1, dtype=torch.float64) / (1 + torch.arange(m + 1))
    den = torch.randn(groups, n, dtype=torch.float64) / (1 + torch.arange(n))
    coef_dtype = coef_dtype or dtype
    x = x.to(device=device, dtype=dtype).requires_grad_(requires_grad)
    num = num.to(device=device, dtype=coef_dtype).requires_grad_(requires_grad)
    den = den.to(device=device, dtype=coef_dtype).requires_grad_(requires_grad)
    return x, num, den


def as64(*ts):
    return [t.detach().double().requires_grad_(True) for t in ts]


# (shape, channel_dim, groups, m, n, shared)
CASES = [
    ((2, 197, 64), -1, 8, 5, 4, True),
    ((3, 5, 48), -1, 8, 5, 4, False),
    ((4, 33), -1, 1, 3, 2, True),
    ((2, 24, 5, 7), 1, 4, 5, 4, True),
    ((2, 12, 3, 3), 1, 12, 2, 1, False),
    ((7, 16), -1, 16, 8, 8, True),
    ((2, 3, 40), -1, 8, 1, 1, True),
    ((6, 10, 4), 1, 2, 7, 6, False),
]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c[0]}-cd{c[1]}-G{c[2]}-{c[3]}{c[4]}-{'sh' if c[5] else 'pg'}")
@pytest.mark.parametrize("contiguous", [True, False], ids=["contig", "noncontig"])
def test_forward_backward_fp32_vs_float64(device, case, contiguous):
    shape, cd, g, m, n, shared = case
    x, num, den = make_inputs(shape, g, m, n, shared=shared, channel_dim=cd, device=device, contiguous=contiguous,
                              requires_grad=True)
    y = group_rational(x, num, den, channel_dim=cd)
    x64, num64, den64 = as64(x, num, den)
    y64 = group_rational_reference(x64, num64, den64, channel_dim=cd)
    assert y.shape == x.shape and y.dtype == x.dtype
    torch.testing.assert_close(y.double(), y64, rtol=RTOL[torch.float32], atol=1e-6)
    gy = torch.randn_like(y64)
    grads = torch.autograd.grad(y, (x, num, den), gy.float())
    ref = torch.autograd.grad(y64, (x64, num64, den64), gy)
    for name, a, b in zip(("x", "numerator", "denominator"), grads, ref):
        # Sums over many elements: compare relative to the gradient's scale.
        torch.testing.assert_close(a.double(), b, rtol=RTOL[torch.float32], atol=1e-5 * b.abs().max().item() + 1e-6,
                                   msg=lambda s, name=name: f"grad {name}: {s}")


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("coef_dtype", ["same", torch.float32])
def test_half_types_within_twice_eager_error(device, dtype, coef_dtype):
    """Low precision: our error vs float64 is at most 2x plain PyTorch's error at that precision."""
    coef_dtype = dtype if coef_dtype == "same" else coef_dtype
    x, num, den = make_inputs((4, 50, 64), 8, dtype=dtype, coef_dtype=coef_dtype, device=device, requires_grad=True)
    y = group_rational(x, num, den)
    assert y.dtype == dtype
    eager = group_rational_reference(x, num.to(dtype), den.to(dtype), upcast=False)
    x64, num64, den64 = as64(x, num, den)
    y64 = group_rational_reference(x64, num64, den64)
    ours_err = (y.double() - y64).abs().max().item()
    eager_err = (eager.double() - y64).abs().max().item()
    assert ours_err <= 2 * eager_err + 1e-6, (ours_err, eager_err)

    gy = torch.randn_like(y64).to(dtype)
    ours = torch.autograd.grad(y, (x, num, den), gy)
    eager_g = torch.autograd.grad(eager, (x, num, den), gy)
    ref = torch.autograd.grad(y64, (x64, num64, den64), gy.double())
    for name, a, e, r in zip(("x", "numerator", "denominator"), ours, eager_g, ref):
        assert a.dtype == (dtype if name == "x" else coef_dtype)
        ours_err = (a.double() - r).abs().max().item()
        eager_err = (e.double() - r).abs().max().item()
        assert ours_err <= 2 * eager_err + 1e-6 * r.abs().max().item(), (name, ours_err, eager_err)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("case", CASES[:5], ids=str)
def test_gradcheck_float64(case, device):
    shape, cd, g, m, n, shared = case
    small = tuple(min(s, 6) if i != (cd % len(shape)) else s for i, s in enumerate(shape))
    x, num, den = make_inputs(small, g, m, n, shared=shared, dtype=torch.float64, device=device, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b, c: group_rational(a, b, c, channel_dim=cd), (x, num, den))


def test_gradients_only_when_required():
    x, num, den = make_inputs((3, 16), 4, dtype=torch.float64)
    for mask in itertools.product([False, True], repeat=3):
        if not any(mask):
            continue
        leaves = [t.clone().requires_grad_(r) for t, r in zip((x, num, den), mask)]
        y = group_rational(*leaves)
        y.sum().backward()
        for t, r in zip(leaves, mask):
            assert (t.grad is not None) == r
        want = [i for i, r in enumerate(mask) if r]
        dx, dnum, dden = OPS.group_rational_bwd(torch.ones_like(x), x, num, den, -1, list(mask))
        for i, t in enumerate((dx, dnum, dden)):
            assert (t.numel() > 0) == (i in want)


def _opcheck_samples():
    samples = []
    shapes = [((2, 9, 16), -1, 8), ((4, 24), -1, 4), ((2, 8, 3, 5), 1, 2), ((3, 2, 12), 1, 1), ((6, 5), 0, 3),
              ((1, 1, 32), -1, 32)]
    orders = [(5, 4), (3, 3), (1, 2), (6, 1)]
    i = 0
    for (shape, cd, g), (m, n) in itertools.product(shapes, orders):
        dtype = [torch.float32, torch.float64, torch.bfloat16, torch.float16][i % 4]
        samples.append(dict(shape=shape, cd=cd, g=g, m=m, n=n, shared=i % 2 == 0, dtype=dtype, contiguous=i % 3 != 0))
        i += 1
    return samples


OPCHECK_SAMPLES = _opcheck_samples()


def test_opcheck_has_enough_samples():
    assert len(OPCHECK_SAMPLES) >= 20


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("s", OPCHECK_SAMPLES, ids=lambda s: f"{s['shape']}-cd{s['cd']}-G{s['g']}-{s['m']}{s['n']}-"
                         f"{str(s['dtype'])[6:]}-{'c' if s['contiguous'] else 'nc'}")
def test_opcheck(s, device):
    grad = s["dtype"] in (torch.float32, torch.float64)
    x, num, den = make_inputs(s["shape"], s["g"], s["m"], s["n"], shared=s["shared"], dtype=s["dtype"],
                              contiguous=s["contiguous"], requires_grad=grad, device=device)
    cd = s["cd"] % x.dim()
    torch.library.opcheck(OPS.group_rational_fwd, (x, num, den, cd))
    gy = torch.randn(x.shape, dtype=x.dtype, device=device)
    mask = [True, s["shared"], True]
    torch.library.opcheck(OPS.group_rational_bwd, (gy, x.detach(), num.detach(), den.detach(), cd, mask))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("channel_dim", [-1, 1])
def test_torch_compile_fullgraph_matches_eager(channel_dim, device):
    shape = (2, 10, 32) if channel_dim == -1 else (2, 32, 3, 4)
    x, num, den = make_inputs(shape, 8, device=device, requires_grad=True)

    def f(x, num, den):
        return (group_rational(x * 1.5, num, den, channel_dim=channel_dim) ** 2).sum()

    compiled = torch.compile(f, fullgraph=True, backend="inductor")
    eager_out = f(x, num, den)
    eager_grads = torch.autograd.grad(eager_out, (x, num, den))
    out = compiled(x, num, den)
    grads = torch.autograd.grad(out, (x, num, den))
    torch.testing.assert_close(out, eager_out)
    for a, b in zip(grads, eager_grads):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("device", DEVICES)
def test_coefficient_gradients_bitwise_deterministic(device):
    x, num, den = make_inputs((8, 197, 192), 8, device=device, requires_grad=True)
    gy = torch.randn(x.shape, device=device)
    threads = torch.get_num_threads()
    results = []
    for nthreads in (threads, 1, threads):
        torch.set_num_threads(nthreads)
        try:
            results.append(torch.autograd.grad(group_rational(x, num, den), (num, den), gy))
        finally:
            torch.set_num_threads(threads)
    for other in results[1:]:
        assert torch.equal(results[0][0], other[0]) and torch.equal(results[0][1], other[1])


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
def test_empty_input(device, dtype):
    x, num, den = make_inputs((0, 16), 4, dtype=dtype, device=device, requires_grad=True)
    y = group_rational(x, num, den)
    assert y.shape == (0, 16) and y.dtype == dtype
    y.sum().backward()
    assert x.grad.shape == x.shape and torch.all(num.grad == 0) and torch.all(den.grad == 0)


def test_denominator_never_below_one_and_special_values():
    num = torch.tensor([[0.0, 1.0, 0.0, 0.0, 0.0, 0.0]])
    den = -torch.ones(1, 4)  # negative coefficients: |b| keeps Q >= 1, no poles
    x = torch.tensor([[-3.0, -1.0, 0.0, 1.0, 3.0, float("nan"), float("inf"), -float("inf")]])
    y = group_rational(x, num, den)
    q = 1 + sum(x.abs() ** j for j in range(1, 5))
    torch.testing.assert_close(y[:, :5], (x / q)[:, :5])
    assert torch.isnan(y[0, 5])
    ref = group_rational_reference(x, num, den)
    torch.testing.assert_close(y, ref, equal_nan=True)


@pytest.mark.parametrize("device", DEVICES)
def test_autocast_keeps_dtype_and_promotes_half_coefficients(device):
    x, num, den = make_inputs((4, 16), 4, dtype=torch.bfloat16, coef_dtype=torch.bfloat16, device=device,
                              requires_grad=True)
    with torch.autocast(device, dtype=torch.bfloat16):
        y = group_rational(x, num, den)
        y32 = group_rational(x.detach().float(), num.detach().float(), den.detach().float())
    assert y.dtype == torch.bfloat16 and y32.dtype == torch.float32
    # Inside autocast the bf16 coefficients are used in fp32: same result as fp32 coefficients.
    expected = group_rational(x.detach(), num.detach().float(), den.detach().float())
    assert torch.equal(y, expected)
    y.float().sum().backward()
    assert num.grad.dtype == torch.bfloat16 and den.grad.dtype == torch.bfloat16


def test_backends_reported():
    backends = available_backends()
    assert backends[0] == "cpu" and set(backends) <= {"cpu", "cuda"}


# ---------------------------------------------------------------------------------------------------- bad input
BAD = [
    (lambda x, n, d: group_rational(x.int(), n, d), TypeError, "x must be float16, bfloat16, float32 or float64"),
    (lambda x, n, d: group_rational(x, n.double(), d), TypeError, "same dtype"),
    (lambda x, n, d: group_rational(x, n.double(), d.double()), TypeError, "numerator/denominator dtype"),
    (lambda x, n, d: group_rational(x, n, d[:3]), ValueError, "must divide the channels"),
    (lambda x, n, d: group_rational(x, n.expand(3, -1).contiguous(), d), ValueError, "numerator must have 1 row"),
    (lambda x, n, d: group_rational(x, n[0], d), ValueError, "numerator must be 2-D"),
    (lambda x, n, d: group_rational(x, n, d[0]), ValueError, "denominator must be 2-D"),
    (lambda x, n, d: group_rational(x, n, d, channel_dim=5), ValueError, "channel_dim=5 is out of range"),
    (lambda x, n, d: group_rational(x, n.to("meta"), d), ValueError, "numerator must be on x's device"),
    (lambda x, n, d: group_rational(x, n, d.to("meta")), ValueError, "denominator must be on x's device"),
    (lambda x, n, d: group_rational(x, n, torch.zeros(4, 17, device=x.device)), ValueError, "orders must satisfy"),
]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("fn, exc, msg", BAD, ids=[b[2][:30] for b in BAD])
def test_bad_input_raises_clear_error(fn, exc, msg, device):
    x, num, den = make_inputs((2, 16), 4, device=device)
    with pytest.raises(exc, match=msg):
        fn(x, num, den)


def test_compiled_op_checks_too():
    """The registered op itself validates (direct torch.ops callers get errors, not garbage)."""
    x, num, den = make_inputs((2, 16), 4)
    with pytest.raises(RuntimeError, match="must divide the channels"):
        OPS.group_rational_fwd(x, num, den[:3], 1)
    with pytest.raises(RuntimeError, match="numerator must have 1 row"):
        OPS.group_rational_fwd(x, num.expand(2, -1).contiguous(), den, 1)


def test_cuda_tensor_without_cuda_kernels(monkeypatch):
    """A CUDA x with a CPU-only build gets a clear error (simulated: fake CUDA tensors need no GPU)."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    from kat_backbones.ops import rational_op as gr_module

    monkeypatch.setattr(gr_module, "_has_kernel", lambda backend: backend == "CPU")
    with FakeTensorMode():
        x, num, den = (torch.empty(*s, device="cuda") for s in ((2, 8), (1, 6), (2, 4)))
        with pytest.raises(RuntimeError, match="built without its CUDA kernels"):
            group_rational(x, num, den)


def test_formula_matches_spec_gradients_pointwise():
    """dF/db_j = -(P/Q^2) sign(b_j) |x|^j with sign(0) = +1, checked against the closed form."""
    x = torch.tensor([[-1.5, -0.5, 0.0, 0.5, 2.0, 1.0, -2.0, 0.25]], dtype=torch.float64)
    a = torch.tensor([[0.1, 0.9, 0.2, -0.1, 0.05, 0.01]], dtype=torch.float64, requires_grad=True)
    b = torch.tensor([[0.0, -0.3, 0.2, 0.1]], dtype=torch.float64, requires_grad=True)
    y = group_rational(x, a, b)
    y.sum().backward()
    ax = x.abs()
    p = sum(a[0, i].detach() * x ** i for i in range(6))
    q = 1 + sum(b[0, j].detach().abs() * ax ** (j + 1) for j in range(4))
    sign_b = torch.where(b.detach() < 0, -1.0, 1.0)[0]
    want_b = torch.stack([(-(p / q**2) * sign_b[j] * ax ** (j + 1)).sum() for j in range(4)])
    want_a = torch.stack([(x**i / q).sum() for i in range(6)])
    torch.testing.assert_close(b.grad[0], want_b)
    torch.testing.assert_close(a.grad[0], want_a)
    assert math.isfinite(float(y.sum()))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("layout", ["aligned", "offset", "odd-span", "channels-first"])
def test_cuda_matches_cpu_kernel(dtype, layout):
    """The CUDA kernels agree with the CPU kernels on KAT-sized inputs: vector and scalar paths, many chunks."""
    if layout == "aligned":
        x, num, den = make_inputs((8, 197, 768), 8, dtype=dtype, shared=False)
        cd = -1
    elif layout == "offset":  # storage offset of one element: 16-byte loads are not allowed, scalar path
        x, num, den = make_inputs((8 * 197 * 768 + 1,), 8, dtype=dtype)
        x = x[1:].view(8, 197, 768)
        cd = -1
    elif layout == "odd-span":  # group span 9 is not a multiple of the vector width
        x, num, den = make_inputs((64, 33, 72), 8, dtype=dtype)
        cd = -1
    else:
        x, num, den = make_inputs((4, 64, 30, 30), 8, dtype=dtype)
        cd = 1
    gy = torch.randn(x.shape, dtype=torch.float64).to(dtype)
    outs = {}
    for dev in ("cpu", "cuda"):
        leaves = [t.to(dev).requires_grad_(True) for t in (x, num, den)]
        y = group_rational(*leaves, channel_dim=cd)
        grads = torch.autograd.grad(y, leaves, gy.to(dev))
        outs[dev] = [y.cpu(), *(g.cpu() for g in grads)]
    tol = {torch.float64: 1e-12, torch.float32: 1e-5, torch.float16: 2e-3, torch.bfloat16: 1.6e-2}[dtype]
    for name, a, b in zip(("y", "dx", "dnum", "dden"), outs["cpu"], outs["cuda"]):
        scale = a.double().abs().max().item() + 1e-12
        err = (a.double() - b.double()).abs().max().item()
        # Elementwise outputs differ by rounding only; coefficient sums over ~1e6 items relative to their scale.
        assert err <= tol * scale, (name, err, scale)
