"""KAT models in timm: sizes, FLOPs, cfgs, features, init, checkpoints and the ViT -> KAT transfer."""

import math

import pytest
import timm
import torch
import torch.nn.functional as F

import kat_backbones  # noqa: F401  (registers the models)
from kat_backbones.checkpoint import save_state_dict
from kat_backbones.convert import load_kat_weights, vit_to_kat_state_dict
from kat_backbones.flops import count_flops
from kat_backbones.layers import KAN, GroupRational

SIZES = {  # params, GFLOPs (paper convention), embed dim
    "tiny": (5_718_328, 1.13, 192),
    "small": (22_051_576, 4.35, 384),
    "base": (86_568_568, 17.06, 768),
}
ALL_NAMES = [f"kat_{s}{a}_patch16_224" for s in SIZES for a in ("", "_swish", "_gelu")]


def test_registered():
    assert sorted(timm.list_models("kat_*")) == sorted(ALL_NAMES)


@pytest.mark.parametrize("size", list(SIZES))
def test_params_and_gflops(size):
    params, gflops, dim = SIZES[size]
    model = timm.create_model(f"kat_{size}_patch16_224")
    report = count_flops(model, torch.randn(1, 3, 224, 224))
    assert report.params == params
    assert sum(p.numel() for p in model.parameters()) == params
    assert abs(report.paper / 1e9 - gflops) / gflops < 0.01, report.summary()
    rational = 12 * 197 * 5 * dim * 21
    assert report.flops["rational"] == rational
    assert report.full - report.paper == 12 * 2 * 197 * 197 * dim  # q @ k^T and attn @ v
    assert report.calls["rational"] == 24


def test_pretrained_cfg_and_architecture():
    model = timm.create_model("kat_small_gelu_patch16_224", pretrained=False)
    cfg = model.pretrained_cfg
    assert cfg["mean"] == (0.485, 0.456, 0.406) and cfg["std"] == (0.229, 0.224, 0.225)
    assert cfg["crop_pct"] == 0.875 and cfg["interpolation"] == "bicubic" and cfg["num_classes"] == 1000
    assert cfg["input_size"] == (3, 224, 224)
    assert model.embed_dim == 384 and len(model.blocks) == 12 and model.blocks[0].attn.num_heads == 6
    assert model.cls_token is not None and model.pos_embed.shape == (1, 197, 384)
    assert model.blocks[0].norm1.eps == 1e-6 and model.blocks[0].attn.qkv.bias is not None
    assert isinstance(model.blocks[0].ls1, torch.nn.Identity)
    mlp = model.blocks[3].mlp
    assert isinstance(mlp, KAN) and mlp.act1.init == "identity" and mlp.act2.init == "gelu"
    assert mlp.fc1.out_features == 4 * 384
    data_cfg = timm.data.resolve_data_config({}, model=model)
    assert data_cfg["crop_pct"] == 0.875


def test_aliases_are_swish():
    torch.manual_seed(0)
    alias = timm.create_model("kat_tiny_patch16_224", img_size=32)
    torch.manual_seed(0)
    swish = timm.create_model("kat_tiny_swish_patch16_224", img_size=32)
    assert alias.blocks[0].mlp.act2.init == "swish"
    for (ka, va), (kb, vb) in zip(alias.state_dict().items(), swish.state_dict().items()):
        assert ka == kb and torch.equal(va, vb)


@pytest.mark.parametrize("name", ALL_NAMES)
def test_forward_backward(name):
    model = timm.create_model(name, img_size=64, drop_path_rate=0.1)
    x = torch.randn(2, 3, 64, 64)
    out = model(x)
    assert out.shape == (2, 1000) and torch.isfinite(out).all()
    out.logsumexp(-1).mean().backward()
    mlp = model.blocks[-1].mlp
    for p in (mlp.act1.weight_numerator, mlp.act1.weight_denominator, mlp.act2.weight_numerator, mlp.fc1.weight):
        assert p.grad is not None and torch.isfinite(p.grad).all()
    assert mlp.act2.weight_denominator.grad.abs().sum() > 0


def test_init_survives_timm_init():
    """timm's ViT init overwrites every Linear; the KAT entrypoints leave the KAN init in effect."""
    torch.manual_seed(0)
    model = timm.create_model("kat_small_patch16_224", img_size=32)
    g = 1.0 / model.blocks[0].mlp.act2.second_moment()
    fc1 = torch.cat([b.mlp.fc1.weight.flatten() for b in model.blocks])
    fc2 = torch.cat([b.mlp.fc2.weight.flatten() for b in model.blocks])
    assert fc1.std().item() == pytest.approx(1 / math.sqrt(384), rel=0.01)
    assert fc2.std().item() == pytest.approx(math.sqrt(g / 1536), rel=0.01)
    assert model.blocks[0].attn.qkv.weight.std().item() == pytest.approx(0.02, rel=0.05)  # timm's init elsewhere
    # re-running timm's init keeps it too (VisionTransformer.init_weights calls KAN.init_weights after the Linears)
    model.init_weights()
    assert torch.cat([b.mlp.fc1.weight.flatten() for b in model.blocks]).std().item() == pytest.approx(
        1 / math.sqrt(384), rel=0.01)
    ref = timm.create_model("kat_tiny_patch16_224", img_size=32, kan_init="reference")
    fc = torch.cat([b.mlp.fc2.weight.flatten() for b in ref.blocks])
    assert fc.std().item() == pytest.approx(0.02, rel=0.02)


def test_features_only_and_intermediates():
    feats = timm.create_model("kat_tiny_patch16_224", features_only=True, img_size=64, out_indices=(2, 5, 8, 11))
    outs = feats(torch.randn(2, 3, 64, 64))
    assert [tuple(o.shape) for o in outs] == [(2, 192, 4, 4)] * 4
    assert feats.feature_info.channels() == [192] * 4 and feats.feature_info.reduction() == [16] * 4
    model = timm.create_model("kat_tiny_gelu_patch16_224", img_size=64)
    final, inter = model.forward_intermediates(torch.randn(1, 3, 64, 64), indices=[3, 11])
    assert final.shape == (1, 17, 192) and [tuple(t.shape) for t in inter] == [(1, 192, 4, 4)] * 2


def _official_layout_state_dict(embed_dim=192, depth=12, seed=0):
    """A state dict with the released KAT checkpoints' keys: timm ViT keys + mlp.act{1,2}.weight_{num,den}."""
    vit = timm.create_model("vit_tiny_patch16_224", num_classes=1000)
    gen = torch.Generator().manual_seed(seed)
    sd = {k: torch.randn(v.shape, generator=gen) * 0.02 for k, v in vit.state_dict().items()}
    for i in range(depth):
        for act in ("act1", "act2"):
            sd[f"blocks.{i}.mlp.{act}.weight_numerator"] = torch.randn(1, 6, generator=gen)
            sd[f"blocks.{i}.mlp.{act}.weight_denominator"] = torch.randn(8, 4, generator=gen)
    return sd


def test_official_checkpoint_layout_loads_strictly(tmp_path):
    sd = _official_layout_state_dict()
    model = timm.create_model("kat_tiny_patch16_224")
    assert set(model.state_dict()) == set(sd)
    model.load_state_dict(sd, strict=True)
    # from files, wrapped as timm's train script saves them, and through timm's pretrained machinery
    pth, st = tmp_path / "kat.pth", tmp_path / "kat.safetensors"
    torch.save({"state_dict": sd, "epoch": 3}, pth)
    save_state_dict(sd, st)
    for path in (pth, st):
        loaded = load_kat_weights(timm.create_model("kat_tiny_patch16_224"), path)
        assert torch.equal(loaded.blocks[4].mlp.act2.weight_denominator, sd["blocks.4.mlp.act2.weight_denominator"])
    via_timm = timm.create_model("kat_tiny_patch16_224", pretrained=True, pretrained_cfg_overlay=dict(file=str(st)))
    assert torch.equal(via_timm.blocks[11].mlp.fc2.weight, sd["blocks.11.mlp.fc2.weight"])


def test_vit_to_kat_transfer_matches_vit():
    """A random-weight ViT-Ti converted to kat_tiny_gelu gives nearly the ViT's logits (gelu-initialised act2)."""
    torch.manual_seed(0)
    vit = timm.create_model("vit_tiny_patch16_224", pretrained=False).eval()
    kat = timm.create_model("kat_tiny_gelu_patch16_224").eval()
    sd = vit_to_kat_state_dict({"model": vit.state_dict()}, kat)
    kat.load_state_dict(sd, strict=True)
    assert torch.equal(kat.blocks[5].mlp.fc1.weight, vit.blocks[5].mlp.fc1.weight)
    assert kat.blocks[5].mlp.act1.init == "identity"
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        a, b = vit(x), kat(x)
    rel = ((a - b).norm() / a.norm()).item()
    assert rel < 5e-2, rel
    # strictness: a ViT missing a tensor, or a wrong-size one, is refused
    broken = dict(vit.state_dict())
    broken.pop("blocks.0.attn.qkv.weight")
    with pytest.raises(ValueError, match="missing"):
        vit_to_kat_state_dict(broken, kat)
    deit = dict(vit.state_dict(), dist_token=torch.zeros(1, 1, 192))
    assert "dist_token" not in vit_to_kat_state_dict(deit, kat)


def test_transferred_model_trains():
    torch.manual_seed(0)
    vit = timm.create_model("vit_tiny_patch16_224", img_size=64, num_classes=10)
    kat = timm.create_model("kat_tiny_gelu_patch16_224", img_size=64, num_classes=10)
    kat.load_state_dict(vit_to_kat_state_dict(vit.state_dict(), kat), strict=True)
    kat.train()
    opt = torch.optim.AdamW(kat.parameters(), lr=1e-3)
    x, y = torch.randn(8, 3, 64, 64), torch.randint(0, 10, (8,))
    losses = []
    for _ in range(20):
        loss = F.cross_entropy(kat(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert all(math.isfinite(v) for v in losses)
    assert losses[-1] < 0.5 * losses[0], losses


def test_rational_coefficients_are_parameters_everywhere():
    model = timm.create_model("kat_tiny_patch16_224", img_size=32)
    rationals = [m for m in model.modules() if isinstance(m, GroupRational)]
    assert len(rationals) == 24
    assert sum(p.numel() for m in rationals for p in m.parameters()) == 912


@pytest.mark.slow
def test_torch_compile_forward():
    torch.manual_seed(0)
    model = timm.create_model("kat_tiny_patch16_224", img_size=64).eval()
    x = torch.randn(2, 3, 64, 64)
    compiled = torch.compile(model, fullgraph=True)
    with torch.no_grad():
        torch.testing.assert_close(compiled(x), model(x), rtol=1e-4, atol=1e-4)
