"""The fused GR-KAN layer (``KAN(kan_impl=...)``): the compiled-op LayerNorm + act1 node and the Triton kernels.

The Triton cases run on a GPU when there is one, else in Triton's CPU interpreter (``TRITON_INTERPRET=1``, set here
for this module's import of the kernels), at tiny sizes: the interpreter runs each kernel program in Python. They
skip when Triton is not installed.
"""

from __future__ import annotations

import importlib
import os

import pytest
import torch
from timm.models.vision_transformer import Block

import kat_backbones  # noqa: F401  (registers the models)
from kat_backbones.apps.memory import saved_tensor_bytes
from kat_backbones.layers import KAN, KANBlock
from kat_backbones.ops import available_backends
from tests.conftest import RTOL


def _import_triton_kernels():
    """kat_backbones.ops.triton_kan, interpreted on CPU-only machines; None without Triton."""
    if importlib.util.find_spec("triton") is None:
        return None
    set_env = not torch.cuda.is_available() and "TRITON_INTERPRET" not in os.environ
    if set_env:  # Triton reads it when the kernels are decorated, i.e. at import
        os.environ["TRITON_INTERPRET"] = "1"
    try:
        return importlib.import_module("kat_backbones.ops.triton_kan")
    except ImportError:
        return None
    finally:
        if set_env:
            del os.environ["TRITON_INTERPRET"]


tk = _import_triton_kernels()
TRITON_DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
needs_triton = pytest.mark.skipif(
    tk is None or (TRITON_DEVICE == "cpu" and not tk.interpreting()),
    reason="needs Triton (a GPU, or TRITON_INTERPRET=1 before triton_kan is first imported)",
)
needs_cpu_op = pytest.mark.skipif("cpu" not in available_backends(), reason="needs the compiled CPU op")


def _layer(dim, hidden, groups, dtype, impl, device="cpu", seed=0):
    """(LayerNorm, KAN) with random non-trivial LayerNorm and rational parameters."""
    torch.manual_seed(seed)
    norm = torch.nn.LayerNorm(dim, eps=1e-6)
    kan = KAN(dim, hidden, num_groups=groups, kan_impl=impl)
    with torch.no_grad():
        norm.weight.uniform_(0.5, 1.5)
        norm.bias.normal_(0, 0.2)
        for act in (kan.act1, kan.act2):
            act.weight_numerator.add_(torch.randn_like(act.weight_numerator) * 0.1)
            act.weight_denominator.add_(torch.randn_like(act.weight_denominator) * 0.1)
        kan.fc1.bias.normal_(0, 0.1)
        kan.fc2.bias.normal_(0, 0.1)
    return norm.to(device, dtype), kan.to(device, dtype)


def _run(norm, kan, x, gy, with_norm=True):
    """Output and gradients (x first, then every parameter of norm and kan) of kan(norm(x))."""
    x = x.detach().clone().requires_grad_(True)
    params = [*norm.parameters(), *kan.parameters()] if with_norm else [*kan.parameters()]
    y = kan.forward_with_norm(x, norm) if with_norm else kan(x)
    grads = torch.autograd.grad(y, [x, *params], gy)
    return y.detach(), grads


def _copy(src_norm, src_kan, impl):
    norm = type(src_norm)(src_norm.normalized_shape, eps=src_norm.eps)
    norm.load_state_dict(src_norm.state_dict())
    kan = KAN(src_kan.fc1.in_features, src_kan.fc1.out_features, num_groups=src_kan.act1.num_groups,
              kan_impl=impl)
    kan.load_state_dict(src_kan.state_dict())
    ref = src_kan.fc1.weight
    return norm.to(ref.device, ref.dtype), kan.to(ref.device, ref.dtype)


# ----------------------------------------------------------------------------------------------------------------
# Triton layer vs the unfused layer

# (tokens, dim, hidden, groups): hidden/groups = 16 puts every GEMM tile inside one rational group, 12 does not
TRITON_CASES = [(2, 5, 8, 32, 2), (1, 7, 12, 48, 4)]


@needs_triton
@pytest.mark.parametrize("case", TRITON_CASES, ids=str)
@pytest.mark.parametrize("with_norm", [True, False], ids=["ln", "no_ln"])
def test_triton_layer_matches_unfused_float64(case, with_norm):
    b, n, dim, hidden, groups = case
    norm, ref = _layer(dim, hidden, groups, torch.float64, "unfused", TRITON_DEVICE)
    _, fused = _copy(norm, ref, "triton")
    assert fused._path(torch.empty(1, dim, dtype=torch.float64, device=TRITON_DEVICE), norm if with_norm else None) \
        == "triton"
    x = torch.randn(b, n, dim, dtype=torch.float64, device=TRITON_DEVICE)
    gy = torch.randn(b, n, dim, dtype=torch.float64, device=TRITON_DEVICE)
    y_ref, g_ref = _run(norm, ref, x, gy, with_norm)
    y, g = _run(norm, fused, x, gy, with_norm)
    torch.testing.assert_close(y, y_ref, rtol=1e-10, atol=1e-12)
    names = ["x"] + [k for k, _ in (list(norm.named_parameters()) if with_norm else []) + list(ref.named_parameters())]
    for name, a, r in zip(names, g, g_ref):
        torch.testing.assert_close(a, r, rtol=1e-10, atol=1e-12 * (1 + r.abs().max().item()), msg=name)


@needs_triton
def test_triton_layer_gradcheck_float64():
    """Numerical vs analytic gradients of the Triton layer in every input (fast mode: random directions)."""
    tkan = importlib.import_module("kat_backbones.ops.fused_kan")
    torch.manual_seed(0)
    dev, f64 = TRITON_DEVICE, torch.float64
    dim, hidden, g1, g2 = 4, 16, 2, 1
    inputs = [
        torch.randn(3, dim), 1 + 0.2 * torch.randn(dim), 0.2 * torch.randn(dim),  # x, LayerNorm weight/bias
        torch.tensor([[0.1, 1.0, 0.3, 0.2, 0.05, 0.02]]), 0.3 * torch.randn(g1, 4),  # act1 (shared numerator)
        0.5 * torch.randn(hidden, dim), 0.1 * torch.randn(hidden),  # fc1
        0.3 * torch.randn(g2, 6), 0.3 * torch.randn(g2, 4),  # act2 (per-group numerator)
        0.5 * torch.randn(dim, hidden), 0.1 * torch.randn(dim),  # fc2
    ]
    inputs = [t.to(dev, f64).requires_grad_(True) for t in inputs]

    def layer(x, lw, lb, n1, d1, w1, b1, n2, d2, w2, b2):
        return tkan.kan_triton(x, (lw, lb, 1e-5), n1, d1, w1, b1, n2, d2, w2, b2)

    assert torch.autograd.gradcheck(layer, inputs, fast_mode=True)


@needs_triton
@pytest.mark.parametrize("case", TRITON_CASES[:1], ids=str)
def test_triton_layer_float32_vs_float64(case):
    b, n, dim, hidden, groups = case
    norm64, ref64 = _layer(dim, hidden, groups, torch.float64, "unfused", TRITON_DEVICE)
    norm, fused = _copy(norm64, ref64, "triton")
    norm, fused = norm.float(), fused.float()
    x = torch.randn(b, n, dim, dtype=torch.float64, device=TRITON_DEVICE)
    gy = torch.randn_like(x)
    y64, g64 = _run(norm64, ref64, x, gy)
    y, g = _run(norm, fused, x.float(), gy.float())
    torch.testing.assert_close(y.double(), y64, rtol=RTOL[torch.float32], atol=1e-5)
    for a, r in zip(g, g64):
        torch.testing.assert_close(a.double(), r, rtol=RTOL[torch.float32], atol=1e-5 * (1 + r.abs().max().item()))


@needs_triton
def test_triton_layer_bfloat16_within_twice_unfused_error():
    """bf16 rule (docs/benchmarks.md): error vs float64 at most 2x the unfused layer's own bf16 error."""
    # (the output: + 1e-6; the gradients, rounded to bf16 once by both: + one bf16 ulp of their largest value)
    b, n, dim, hidden, groups = TRITON_CASES[0]
    norm64, ref64 = _layer(dim, hidden, groups, torch.float64, "unfused", TRITON_DEVICE)
    x = torch.randn(b, n, dim, dtype=torch.float64, device=TRITON_DEVICE)
    gy = torch.randn_like(x)
    y64, g64 = _run(norm64, ref64, x, gy)
    results = {}
    for impl in ("unfused", "triton"):
        norm, kan = _copy(norm64, ref64, impl)
        norm, kan = norm.bfloat16(), kan.bfloat16()
        results[impl] = _run(norm, kan, x.bfloat16(), gy.bfloat16())
    (y_f, g_f), (y_u, g_u) = results["triton"], results["unfused"]
    err = lambda a, r: (a.double() - r).abs().max().item()  # noqa: E731
    assert err(y_f, y64) <= 2 * err(y_u, y64) + 1e-6
    for a, u, r in zip(g_f, g_u, g64):
        # plus one bf16 ulp of the largest value: both round each gradient to bf16 once
        assert err(a, r) <= 2 * err(u, r) + 2**-7 * r.abs().max().item()


@needs_triton
def test_triton_coefficient_gradients_deterministic():
    b, n, dim, hidden, groups = TRITON_CASES[1]
    norm, kan = _layer(dim, hidden, groups, torch.float32, "triton", TRITON_DEVICE)
    x = torch.randn(b, n, dim, device=TRITON_DEVICE)
    gy = torch.randn_like(x)
    first = _run(norm, kan, x, gy)[1]
    second = _run(norm, kan, x, gy)[1]
    for a, c in zip(first, second):
        assert torch.equal(a, c)


@needs_triton
def test_triton_matmul_rational_edges_and_bad_shapes():
    """Ragged tiles (M, N, K not multiples of the tile), split-K, the prologue, a mismatched inner dimension."""
    torch.manual_seed(0)
    dev = TRITON_DEVICE
    a, b = torch.randn(19, 21, device=dev), torch.randn(21, 40, device=dev)
    num, den = torch.randn(1, 4, device=dev) * 0.3, torch.randn(5, 3, device=dev) * 0.3
    out, z, _ = tk.matmul_rational(a, b, numerator=num, denominator=den, epilogue="act", write_z=True)
    from kat_backbones.ops import group_rational_reference

    torch.testing.assert_close(z, a @ b, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out, group_rational_reference(a @ b, num, den), rtol=1e-5, atol=1e-5)
    # a long K without epilogue runs split-K (slabs added in order); and the F(b) prologue
    a2, b2 = torch.randn(9, 100, device=dev), torch.randn(100, 40, device=dev)
    torch.testing.assert_close(tk.matmul_rational(a2, b2)[0], a2 @ b2, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(tk.matmul_rational(a2, b2, numerator=num, denominator=den, prologue=True)[0],
                               a2 @ group_rational_reference(b2, num, den), rtol=1e-5, atol=1e-4)
    with pytest.raises(ValueError, match="matmul_rational"):
        tk.matmul_rational(a, b[:20])


# ----------------------------------------------------------------------------------------------------------------
# LayerNorm + act1 on the compiled op (the default 'fused' / 'auto' path)


@needs_cpu_op
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_fused_layer_norm_act1_bitwise_equal_to_unfused(dtype):
    norm, ref = _layer(24, 96, 8, dtype, "unfused")
    _, fused = _copy(norm, ref, "fused")
    x = torch.randn(2, 7, 24, dtype=dtype)
    gy = torch.randn(2, 7, 24, dtype=dtype)
    assert fused._path(x, norm) == "fused" and ref._path(x, norm) == "unfused"
    y_ref, g_ref = _run(norm, ref, x, gy)
    y, g = _run(norm, fused, x, gy)
    assert torch.equal(y, y_ref)
    for a, r in zip(g, g_ref):
        assert torch.equal(a, r)


@needs_cpu_op
def test_fused_layer_norm_act1_gradcheck():
    from kat_backbones.ops.fused_kan import layer_norm_rational

    torch.manual_seed(0)
    args = [torch.randn(2, 4), 1 + 0.2 * torch.randn(4), 0.2 * torch.randn(4), None, 0.3 * torch.randn(1, 6),
            0.3 * torch.randn(2, 4)]
    args = [a.double().requires_grad_(True) if a is not None else a for a in args]
    assert torch.autograd.gradcheck(lambda x, w, b, n, d: layer_norm_rational(x, w, b, 1e-5, n, d),
                                    [args[0], args[1], args[2], args[4], args[5]])


@needs_cpu_op
def test_fused_block_saves_one_token_tensor_less():
    """The fused LayerNorm + act1 keeps x instead of x and LN(x): one (B, N, C) tensor per block less."""
    torch.manual_seed(0)
    blocks = {impl: KANBlock(32, 2, mlp_layer=lambda impl=impl, **kw: KAN(kan_impl=impl, **kw)).eval()
              for impl in ("unfused", "fused")}
    blocks["fused"].load_state_dict(blocks["unfused"].state_dict())
    x = torch.randn(2, 9, 32, requires_grad=True)
    saved = {impl: saved_tensor_bytes(blk, x) for impl, blk in blocks.items()}
    assert saved["unfused"] - saved["fused"] == x.numel() * x.element_size()
    assert torch.equal(blocks["fused"](x), blocks["unfused"](x))


@needs_cpu_op
def test_kat_tiny_activation_memory_not_above_vit():
    """KAT-T keeps no more activations for backward than ViT-Ti (tiny images; the benchmark counts at 224)."""
    import timm

    sizes = dict(img_size=32, num_classes=10, depth=2)
    kat = timm.create_model("kat_tiny_patch16_224", **sizes).train()
    vit = timm.create_model("vit_tiny_patch16_224", **sizes).train()
    assert all(isinstance(b, KANBlock) for b in kat.blocks)
    x = torch.randn(2, 3, 32, 32)
    assert saved_tensor_bytes(kat, x) <= saved_tensor_bytes(vit, x)


def test_kan_impl_validated_and_falls_back():
    with pytest.raises(ValueError, match="kan_impl"):
        KAN(16, 32, num_groups=4, kan_impl="fast")
    # a pre-norm that is not a LayerNorm runs unfused; a timm block with scale_mlp_norm gives timm's result
    kan = KAN(16, 32, num_groups=4)
    x = torch.randn(3, 16)
    rms = torch.nn.RMSNorm(16)
    assert kan._path(x, rms) == "unfused"
    torch.testing.assert_close(kan.forward_with_norm(x, rms), kan(rms(x)))
    # 'triton' with active dropout cannot fuse: it warns and runs as 'fused'
    drop = KAN(16, 32, num_groups=4, kan_impl="triton", drop=0.1).train()
    with pytest.warns(RuntimeWarning, match="runs as 'fused'"):
        assert drop._path(x, torch.nn.LayerNorm(16)) in ("fused", "unfused")
    block = KANBlock(dim=16, num_heads=2, mlp_layer=KAN, scale_mlp_norm=True)
    ref = Block(dim=16, num_heads=2, mlp_layer=KAN, scale_mlp_norm=True)
    ref.load_state_dict(block.state_dict())
    xs = torch.randn(2, 5, 16)
    torch.testing.assert_close(block(xs), ref(xs))


@pytest.mark.skipif(tk is None, reason="needs Triton")
def test_triton_kernels_compile_for_sm90():
    """The real backend (Triton's ptxas, no GPU needed) accepts the kernels: a few bf16 variants of each kernel
    (tools/triton_compile_check.py compiles all of them)."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    from tools.triton_compile_check import variants

    wanted = ("ln_rational_bwd torch.bfloat16 ln=True shared=True", "epilogue=2 in_group=True", "prologue=True")
    picked = [v for v in variants([torch.bfloat16]) if any(w in v[0] for w in wanted)]
    assert len(picked) == 3
    for name, fn, sig, consts, warps, stages in picked:
        src = ASTSource(fn=fn, signature={**sig, **{k: "constexpr" for k in consts}}, constexprs=consts)
        kernel = triton.compile(src, target=GPUTarget("cuda", 90, 32), options=dict(num_warps=warps, num_stages=stages))
        assert kernel.asm["cubin"], name
