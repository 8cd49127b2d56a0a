"""Fourier-KArAt (kat_backbones.layers.karat): the operator against a float64 feature-materialising reference,
parameter counts, the timm KAT and dense-backbone integration (blockwise / universal), FLOPs, init and memory."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import timm
import torch

import kat_backbones  # noqa: F401  (registers the KAT models)
from kat_backbones.apps.memory import saved_tensor_bytes
from kat_backbones.flops import count_flops
from kat_backbones.layers import FourierKArAt, KArAtAttention
from kat_backbones.layers.karat import fourier_rows, fourier_rows_reference, karat_num_params, resolve_karat_cfg
from kat_backbones.models.dense import KATDense
from tools import benchmark_karat as bench

REPO = Path(__file__).resolve().parents[1]


def naive_karat_attention(logits: torch.Tensor, a: torch.Tensor, b: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """The definition, literally: per head, row k, output p: sum_q sum_m a[p,q,m] cos(m A_kq) + b[p,q,m] sin(m A_kq),
    then attn_k = W Phi(A_k). a, b: (h, r, N, G) (the paper's (r, N, G) per head); w: (h, N, r)."""
    grid = a.shape[-1]
    m = torch.arange(1, grid + 1, dtype=logits.dtype)
    feats_cos = torch.cos(logits[..., None] * m)  # (B, h, N, N, G)
    feats_sin = torch.sin(logits[..., None] * m)
    phi = torch.einsum("bhkqm,hpqm->bhkp", feats_cos, a) + torch.einsum("bhkqm,hpqm->bhkp", feats_sin, b)
    return torch.einsum("hnp,bhkp->bhkn", w, phi)


def split_coeff(op: FourierKArAt) -> tuple[torch.Tensor, torch.Tensor]:
    """The module's (h, 2, G, N, r) coefficients as the paper's a, b of shape (h, r, N, G)."""
    return op.coeff[:, 0].permute(0, 3, 2, 1), op.coeff[:, 1].permute(0, 3, 2, 1)


# --------------------------------------------------------------------------------------------------- operator
@pytest.mark.parametrize("grid", [1, 3])
@pytest.mark.parametrize("chunk_elements", [1, 1 << 25])  # 1: every batch item its own slice
def test_fourier_rows_matches_reference_float64(grid, chunk_elements):
    batch, heads, tokens, rank = 3, 2, 9, 4
    logits = (2 * torch.randn(batch, heads, tokens, tokens, dtype=torch.float64)).requires_grad_()
    coeff = torch.randn(heads, 2, grid, tokens, rank, dtype=torch.float64, requires_grad=True)
    out = fourier_rows(logits, coeff, chunk_elements)
    ref = fourier_rows_reference(logits, coeff)
    assert out.shape == (batch, heads, tokens, rank)
    torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)
    g = torch.randn_like(out)
    grads = torch.autograd.grad(out, (logits, coeff), g)
    grads_ref = torch.autograd.grad(ref, (logits, coeff), g)
    for got, want in zip(grads, grads_ref):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)


def test_fourier_rows_gradcheck():
    logits = torch.randn(2, 2, 5, 5, dtype=torch.float64, requires_grad=True)
    coeff = torch.randn(2, 2, 2, 5, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x, c: fourier_rows(x, c, 50), (logits, coeff))


def test_operator_matches_the_definition_and_counts_parameters():
    heads, tokens, grid, rank = 3, 7, 3, 4
    op = FourierKArAt(heads, tokens, grid=grid, rank=rank, init_std=0.5).double()
    a, b = split_coeff(op)
    assert a.shape == b.shape == (heads, rank, tokens, grid) and op.weight.shape == (heads, tokens, rank)
    n_params = sum(p.numel() for p in op.parameters())
    assert n_params == karat_num_params(heads, tokens, grid, rank) == heads * rank * tokens * (2 * grid + 1)

    logits = torch.randn(2, heads, tokens, tokens, dtype=torch.float64, requires_grad=True)
    out = op(logits)
    ref = naive_karat_attention(logits, a, b, op.weight)
    torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)
    g = torch.randn_like(out)
    params = (logits, op.coeff, op.weight)
    for got, want in zip(torch.autograd.grad(out, params, g), torch.autograd.grad(ref, params, g)):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)


def test_operator_rejects_another_token_count():
    op = FourierKArAt(2, 16)
    with pytest.raises(ValueError, match="N=16 tokens"):
        op(torch.randn(1, 2, 9, 9))


def test_bfloat16_logits_are_computed_in_float32():
    op = FourierKArAt(2, 16)
    logits = torch.randn(2, 2, 16, 16)
    out = op(logits.bfloat16())
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), op(logits.bfloat16().float()), rtol=2e-2, atol=2e-2)


def test_resolve_cfg_validates():
    assert resolve_karat_cfg(None) == dict(grid=3, rank=12, mode="blockwise", init_std=None)
    with pytest.raises(ValueError, match="unknown keys"):
        resolve_karat_cfg(dict(grids=3))
    with pytest.raises(ValueError, match="mode"):
        resolve_karat_cfg(dict(mode="shared"))


# --------------------------------------------------------------------------------------------------- attention / init
def test_attention_layer_against_manual_float64():
    torch.manual_seed(0)
    attn = KArAtAttention(16, num_heads=2, num_tokens=5, qkv_bias=True, karat_cfg=dict(grid=2, rank=3)).double()
    x = torch.randn(2, 5, 16, dtype=torch.float64, requires_grad=True)
    out = attn(x)
    q, k, v = attn.qkv(x).reshape(2, 5, 3, 2, 8).permute(2, 0, 3, 1, 4)
    logits = q @ k.transpose(-2, -1) / math.sqrt(8)
    a, b = split_coeff(attn.karat)
    ref = (naive_karat_attention(logits, a, b, attn.karat.weight) @ v).transpose(1, 2).reshape(2, 5, 16)
    torch.testing.assert_close(out, attn.proj(ref), rtol=1e-12, atol=1e-12)
    out.sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in attn.parameters())
    with pytest.raises(ValueError, match="mask"):
        attn(x, attn_mask=torch.zeros(5, 5, dtype=torch.float64))


def test_paper_init_blows_up_activations_default_init_preserves_them():
    """N(0, 1) coefficients (the paper) vs the variance-preserving default, one attention layer at N=197."""
    torch.manual_seed(0)
    x = torch.randn(2, 197, 192)
    stds = {}
    for init_std in (1.0, None):
        torch.manual_seed(1)
        attn = KArAtAttention(192, 3, num_tokens=197, qkv_bias=True, karat_cfg=dict(init_std=init_std))
        torch.nn.init.normal_(attn.qkv.weight, std=192**-0.5)  # unit-variance q, k, v
        torch.nn.init.normal_(attn.proj.weight, std=192**-0.5)
        with torch.no_grad():
            stds[init_std] = float(attn(x).std())
    assert 0.3 < stds[None] < 3.0, stds  # variance-preserving: output ~ input scale
    assert stds[1.0] > 30 * stds[None], stds  # the paper's init: orders of magnitude larger


# --------------------------------------------------------------------------------------------------- timm KAT
def test_timm_kat_blockwise_and_universal():
    kwargs = dict(img_size=32, num_classes=4, depth=3)  # 2 x 2 patches + cls = 5 tokens
    base = timm.create_model("kat_tiny_patch16_224", **kwargs)
    n_base = sum(p.numel() for p in base.parameters())
    extra = karat_num_params(3, 5, 3, 12)

    blockwise = timm.create_model("kat_tiny_patch16_224", attn_type="fourier_karat", **kwargs)
    assert sum(p.numel() for p in blockwise.parameters()) == n_base + 3 * extra
    assert blockwise.blocks[0].attn.karat is not blockwise.blocks[1].attn.karat
    assert isinstance(blockwise.blocks[0].attn, KArAtAttention)

    universal = timm.create_model("kat_tiny_patch16_224", attn_type="fourier_karat",
                                  attn_cfg=dict(mode="universal", grid=1, rank=4), **kwargs)
    assert sum(p.numel() for p in universal.parameters()) == n_base + karat_num_params(3, 5, 1, 4)
    assert all(blk.attn.karat is universal.blocks[0].attn.karat for blk in universal.blocks)
    x = torch.randn(2, 3, 32, 32)
    universal(x).sum().backward()
    shared = universal.blocks[0].attn.karat
    assert shared.coeff.grad is not None and shared.coeff.grad.abs().sum() > 0

    # a KArAt model's state dict loads into a fresh one (the shared operator under every block name)
    again = timm.create_model("kat_tiny_patch16_224", attn_type="fourier_karat",
                              attn_cfg=dict(mode="universal", grid=1, rank=4), **kwargs)
    again.load_state_dict(universal.state_dict(), strict=True)
    universal.eval(), again.eval()
    torch.testing.assert_close(again(x), universal(x))


def test_timm_kat_dynamic_img_size_fails_at_build():
    with pytest.raises(ValueError, match="fixed token count"):
        timm.create_model("kat_tiny_patch16_224", img_size=32, dynamic_img_size=True, attn_type="fourier_karat")


def test_flops_count_the_operator():
    model = timm.create_model("kat_tiny_patch16_224", img_size=32, num_classes=4, depth=2, attn_type="fourier_karat",
                              attn_cfg=dict(grid=3, rank=12))
    report = count_flops(model, torch.randn(2, 3, 32, 32))
    assert report.flops["karat"] == 2 * 2 * 3 * (2 * 3 + 1) * 5**2 * 12  # blocks x B x h x (2G+1) N^2 r
    assert report.full - report.paper == report.flops["attention"] + report.flops["karat"]


# --------------------------------------------------------------------------------------------------- dense backbone
def test_dense_backbone_window_and_global_blocks():
    arch = dict(embed_dims=32, depth=4, num_heads=2)
    common = dict(arch=arch, img_size=64, window_size=3, global_blocks=(1, 3), out_indices=(3,), drop_path_rate=0.0)
    softmax = KATDense(**common)
    model = KATDense(**common, attn_type="fourier_karat", attn_cfg=dict(grid=2, rank=4))
    window, glob = karat_num_params(2, 9, 2, 4), karat_num_params(2, 16, 2, 4)  # 3x3 windows; 4x4 global grid
    n_soft = sum(p.numel() for p in softmax.parameters())
    assert sum(p.numel() for p in model.parameters()) == n_soft + 2 * window + 2 * glob
    out = model(torch.randn(2, 3, 64, 64))[0]
    assert out.shape == (2, 32, 4, 4)
    out.sum().backward()
    assert model.blocks[0].attn.karat.coeff.grad is not None and model.blocks[1].attn.karat.coeff.grad is not None
    with pytest.raises(ValueError, match="N=16 tokens"):  # a global block's grid is fixed by img_size
        model(torch.randn(1, 3, 80, 80))

    universal = KATDense(**common, attn_type="fourier_karat", attn_cfg=dict(grid=2, rank=4, mode="universal"))
    assert set(universal.karat_universal) == {"n9", "n16"}
    assert sum(p.numel() for p in universal.parameters()) == n_soft + window + glob
    assert universal.blocks[0].attn.karat is universal.blocks[2].attn.karat is universal.karat_universal["n9"]
    names = [n for n, _ in universal.named_parameters() if "karat" in n]
    assert names and all(n.startswith("karat_universal.") for n in names)  # layer decay: not block 0's

    soft_global = KATDense(**common, attn_type="fourier_karat", attn_cfg=dict(grid=2, rank=4, global_attn="softmax"))
    assert not hasattr(soft_global.blocks[1].attn, "karat")
    assert soft_global(torch.randn(1, 3, 80, 80))[0].shape == (1, 32, 5, 5)  # windows stay 3x3: any size works


# --------------------------------------------------------------------------------------------------- memory
def test_lean_block_saves_less_than_naive():
    torch.manual_seed(0)
    x = torch.randn(8, 197, 192, requires_grad=True)
    saved = {v: saved_tensor_bytes(bench.build_block(v, 192, 3, 197, 3, 12), x) for v in ("lean", "naive")}
    one_map = 8 * 3 * 197 * 197 * 4  # one (B, h, N, N) float32 tensor
    assert saved["naive"] - saved["lean"] > 5 * one_map, saved  # naive keeps the (B, h, N, N, 2G) features & co.


def test_lean_block_peak_memory_below_naive():
    """tools/benchmark_karat.py's measurement: one KAT-T block, N=197, batch 8, forward + backward, fresh process."""
    if not bench.peak_memory_supported():
        pytest.skip("peak RSS reset (/proc/self/clear_refs) not available on this OS")
    results = bench.measure_memory(("naive", "lean"), tokens=197, batch=8)
    lean, naive = results["lean"], results["naive"]
    one_map = 8 * 3 * 197 * 197 * 4
    assert lean["peak_bytes"] < 0.75 * naive["peak_bytes"], (lean, naive)
    assert naive["peak_bytes"] - lean["peak_bytes"] > 4 * one_map, (lean, naive)
