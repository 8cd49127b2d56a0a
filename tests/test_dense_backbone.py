"""The dense-prediction backbone (kat_backbones.models.dense.KATDense): shapes, ViTDet structure, window locality,
activation checkpointing and loading timm KAT / ViT checkpoints. Pure PyTorch + timm, CPU, tiny sizes."""

from __future__ import annotations

import pytest
import timm
import torch
from safetensors.torch import save_file

import kat_backbones  # noqa: F401  (registers the timm KAT models)
from kat_backbones.layers import KAN
from kat_backbones.models import KAT_ARCHS
from kat_backbones.models.dense import KATDense, checkpoint_filter_fn

# 4 blocks, 64 wide: everything structural of the presets at a fraction of the cost
SMALL = dict(embed_dims=64, depth=4, num_heads=2)


def small_model(**kwargs) -> KATDense:
    args = dict(arch=SMALL, img_size=64, window_size=4, global_blocks=(1, 3), out_indices=(3,), drop_path_rate=0.0)
    args.update(kwargs)
    return KATDense(**args)


@pytest.mark.parametrize("mlp_type", ["kan", "mlp"])
def test_output_shapes_and_indices(mlp_type):
    model = small_model(out_indices=(1, -1), mlp_type=mlp_type).eval()
    assert model.out_indices == (1, 3)
    assert model.out_channels == [64, 64]
    for h, w in [(64, 64), (80, 48), (70, 33)]:  # non-square, not a multiple of the window / the patch
        outs = model(torch.randn(2, 3, h, w))
        grid = (-(-h // 16), -(-w // 16))
        assert [tuple(o.shape) for o in outs] == [(2, 64, *grid)] * 2
        assert all(torch.isfinite(o).all() for o in outs)


@pytest.mark.parametrize("arch", sorted(KAT_ARCHS))
def test_presets_match_timm_vit(arch):
    """ViT baseline preset = timm's ViT of that size minus cls token / final norm / head, plus the rel-pos tables."""
    model = KATDense(arch, img_size=224, mlp_type="mlp")
    name = {"tiny": "vit_tiny_patch16_224", "small": "vit_small_patch16_224", "base": "vit_base_patch16_224"}[arch]
    vit = timm.create_model(name, pretrained=False)
    c, head_dim = vit.embed_dim, vit.embed_dim // KAT_ARCHS[arch]["num_heads"]
    dropped = c + 2 * c + sum(p.numel() for p in vit.head.parameters())  # cls_token, norm, head
    rel_pos = 12 * 2 * (2 * 14 - 1) * head_dim  # 224 / 16 = 14 = window: every table is (27, head_dim)
    assert sum(p.numel() for p in model.parameters()) == sum(p.numel() for p in vit.parameters()) - dropped + rel_pos


def test_vitdet_structure():
    model = KATDense("tiny", img_size=(512, 256), drop_path_rate=0.1)
    assert model.pos_embed.shape == (1, 1 + 14 * 14, 192)  # 224 grid with a cls slot
    head_dim = 192 // 3
    for i, blk in enumerate(model.blocks):
        is_global = i in (2, 5, 8, 11)
        assert blk.window_size == (0 if is_global else 14)
        expect_h, expect_w = ((2 * 32 - 1, 2 * 16 - 1) if is_global else (27, 27))
        assert blk.attn.rel_pos_h.shape == (expect_h, head_dim)
        assert blk.attn.rel_pos_w.shape == (expect_w, head_dim)
        assert not blk.attn.rel_pos_h.any() and not blk.attn.rel_pos_w.any()  # zero init
        assert isinstance(blk.mlp, KAN)
        assert blk.mlp.act2.weight_denominator.shape == (8, 4)
    # linear stochastic depth, 0 at the first block, 0.1 at the last
    assert isinstance(model.blocks[0].drop_path1, torch.nn.Identity)
    assert model.blocks[-1].drop_path1.drop_prob == pytest.approx(0.1)
    assert model.blocks[6].drop_path1.drop_prob == pytest.approx(0.1 * 6 / 11)
    vit = KATDense("tiny", mlp_type="mlp")
    assert isinstance(vit.blocks[0].mlp.act, torch.nn.GELU)


def test_window_attention_is_local():
    """All-window model: a change inside one window leaves every other window's features unchanged."""
    model = small_model(global_blocks=(), window_size=2).eval()  # 4x4 token grid = 2x2 windows of 2x2 tokens
    x = torch.randn(1, 3, 64, 64)
    y = x.clone()
    y[:, :, :16, :16] += 1.0  # token (0, 0), in window (0, 0)
    with torch.no_grad():
        a, b = model(x)[0], model(y)[0]
    changed = (a - b).abs().amax(dim=1)[0] > 1e-5
    assert changed[:2, :2].any()
    assert not changed[2:, :].any() and not changed[:, 2:].any()
    # with a global block the change reaches everything
    model = small_model(global_blocks=(0,), window_size=2).eval()
    with torch.no_grad():
        changed = (model(x)[0] - model(y)[0]).abs().amax(dim=1)[0] > 1e-5
    assert changed.all()


def test_activation_checkpointing_matches():
    torch.manual_seed(0)
    ref = small_model().train()
    cp = small_model(with_cp=True).train()
    cp.load_state_dict(ref.state_dict())
    x = torch.randn(2, 3, 64, 64)
    out_ref, out_cp = ref(x)[0], cp(x)[0]
    torch.testing.assert_close(out_cp, out_ref)
    out_ref.square().mean().backward()
    out_cp.square().mean().backward()
    for (name, p_ref), p_cp in zip(ref.named_parameters(), cp.parameters()):
        torch.testing.assert_close(p_cp.grad, p_ref.grad, msg=name)


def test_final_norm_and_bad_args():
    model = small_model(final_norm=True, out_indices=(1, 3))
    assert isinstance(model.norm, torch.nn.LayerNorm)
    with pytest.raises(ValueError, match="out_indices"):
        small_model(out_indices=(4,))
    with pytest.raises(ValueError, match="global_blocks"):
        small_model(global_blocks=(2, 5))
    assert small_model(global_blocks=(-1,)).blocks[3].window_size == 0
    with pytest.raises(ValueError, match="arch"):
        KATDense("huge")
    with pytest.raises(ValueError, match="missing"):
        KATDense(dict(embed_dims=64, depth=2))
    with pytest.raises(ValueError, match="mlp_type"):
        small_model(mlp_type="conv")


@pytest.mark.parametrize("fmt", ["pth", "safetensors"])
def test_load_timm_kat_checkpoint(tmp_path, fmt):
    src = timm.create_model("kat_tiny_swish_patch16_224", pretrained=False)
    state = {k: v.contiguous() for k, v in src.state_dict().items()}
    path = tmp_path / f"kat_tiny.{fmt}"
    if fmt == "pth":
        torch.save(state, path)
    else:
        save_file(state, str(path))
    model = KATDense("tiny", img_size=256)
    missing, unexpected = model.load_pretrained(str(path))
    assert unexpected == []
    assert set(missing) == {f"blocks.{i}.attn.rel_pos_{a}" for i in range(12) for a in "hw"}  # ViTDet-only
    own = model.state_dict()
    keys = ("patch_embed.proj.weight", "pos_embed", "blocks.4.attn.qkv.weight", "blocks.7.mlp.act1.weight_numerator",
            "blocks.7.mlp.act2.weight_denominator", "blocks.11.mlp.fc2.bias")
    for key in keys:
        torch.testing.assert_close(own[key], state[key], rtol=0, atol=0, msg=key)
    # the init_cfg path (what mmdet/mmseg call: the OpenMMLab face KATBackbone) loads the same weights
    backbone_module = pytest.importorskip("kat_backbones.mm.backbone")
    fresh = backbone_module.KATBackbone("tiny", img_size=256, init_cfg=dict(type="Pretrained", checkpoint=str(path)))
    fresh.init_weights()
    torch.testing.assert_close(fresh.state_dict()["blocks.0.mlp.fc1.weight"], state["blocks.0.mlp.fc1.weight"])
    # KAT features at 256 are those of the same weights with the pos-embed interpolated: finite, not degenerate
    out = fresh.eval()(torch.randn(1, 3, 256, 256))[0]
    assert out.shape == (1, 192, 16, 16) and torch.isfinite(out).all() and out.std() > 0


def test_load_timm_vit_checkpoint(tmp_path):
    vit = timm.create_model("vit_tiny_patch16_224", pretrained=False)
    path = tmp_path / "vit_tiny.pth"
    torch.save({"model": vit.state_dict()}, path)  # wrapped, as many training scripts save
    baseline = KATDense("tiny", mlp_type="mlp")
    missing, unexpected = baseline.load_pretrained(str(path))
    assert unexpected == [] and all("rel_pos" in k for k in missing)
    torch.testing.assert_close(baseline.blocks[5].mlp.fc1.weight, vit.blocks[5].mlp.fc1.weight)
    # "KAT from ViT": the KAT backbone takes everything but the rationals, which keep their init
    kat = KATDense("tiny")
    act_before = kat.blocks[0].mlp.act2.weight_numerator.detach().clone()
    missing, unexpected = kat.load_pretrained(str(path))
    assert unexpected == []
    parts = ("numerator", "denominator")
    rationals = {f"blocks.{i}.mlp.act{a}.weight_{w}" for i in range(12) for a in (1, 2) for w in parts}
    assert {k for k in missing if "rel_pos" not in k} == rationals
    torch.testing.assert_close(kat.blocks[5].mlp.fc2.weight, vit.blocks[5].mlp.fc2.weight)
    torch.testing.assert_close(kat.blocks[0].mlp.act2.weight_numerator, act_before)


def test_checkpoint_filter_resizes():
    """A 384 checkpoint (24x24 pos grid), a patch-8 kernel and ViTDet-layout rel-pos tables are all resized."""
    model = KATDense("tiny", img_size=224)
    vit384 = timm.create_model("vit_tiny_patch16_384", pretrained=False)
    state = vit384.state_dict()
    state["patch_embed.proj.weight"] = torch.randn(192, 3, 8, 8)
    state["blocks.0.attn.rel_pos_h"] = torch.randn(63, 64)  # a 32-wide table for a 14-window block
    state["backbone_extra"] = torch.zeros(1)
    out = checkpoint_filter_fn({f"module.{k}": v for k, v in state.items()}, model)
    assert "cls_token" not in out and "head.weight" not in out and "norm.weight" not in out
    assert out["pos_embed"].shape == (1, 197, 192)
    torch.testing.assert_close(out["pos_embed"][:, 0], state["pos_embed"][:, 0])  # cls slot carried over
    assert out["patch_embed.proj.weight"].shape == (192, 3, 16, 16)
    assert out["blocks.0.attn.rel_pos_h"].shape == (27, 64)
    missing, unexpected = model.load_pretrained({f"module.{k}": v for k, v in state.items()})
    assert unexpected == ["backbone_extra"]
    # a ViTDet/SAM-style (1, H, W, C) pos-embed without prefix tokens gets a zero cls slot
    nhwc = {"pos_embed": torch.randn(1, 14, 14, 192)}
    pos = checkpoint_filter_fn(nhwc, model)["pos_embed"]
    assert pos.shape == (1, 197, 192) and not pos[:, 0].any()
    torch.testing.assert_close(pos[:, 1:], nhwc["pos_embed"].reshape(1, 196, 192))
    # a detector checkpoint: prefix selects the backbone
    det = {f"backbone.{k}": v for k, v in model.state_dict().items()} | {"neck.w": torch.zeros(1)}
    missing, unexpected = KATDense("tiny", img_size=224).load_pretrained(det, prefix="backbone.")
    assert missing == [] and unexpected == []
