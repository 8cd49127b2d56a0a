"""The released KAT weights through timm's pretrained path, offline: tags, hash check, errors, configs by name."""

import os
import re
import time
from pathlib import Path

import pytest
import timm
import torch
from mmengine.config import Config

import kat_backbones  # noqa: F401  (registers the models)
from kat_backbones.models.pretrained import (
    GITHUB_BASE_URL,
    HF_BASE_URL,
    RELEASED_WEIGHTS,
    PretrainedDownloadError,
    PretrainedHashError,
    file_sha256,
)

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
TINY = next(w for w in RELEASED_WEIGHTS if w.name == "kat_tiny_patch16_224.in1k")


def _official_keys(depth=12):
    """The released checkpoints' key names: timm ViT keys + ``mlp.act{1,2}.weight_{numerator,denominator}`` of the
    official ``KAT_Group`` (numerator (1, 6) shared, denominator (8, 4)); the official KAN replaces the ViT MLP with
    fc1/fc2 of the same shapes."""
    keys = {k: tuple(v.shape) for k, v in timm.create_model("vit_tiny_patch16_224").state_dict().items()}
    for i in range(depth):
        for act in ("act1", "act2"):
            keys[f"blocks.{i}.mlp.{act}.weight_numerator"] = (1, 6)
            keys[f"blocks.{i}.mlp.{act}.weight_denominator"] = (8, 4)
    return keys


@pytest.fixture(scope="module")
def official_file(tmp_path_factory):
    """A KAT-T checkpoint in the official format (plain state dict, official key names) from a random model, named
    like a release file (``NAME_<sha256>.pth``); returns (path, source model)."""
    torch.manual_seed(0)
    src = timm.create_model("kat_tiny_patch16_224").eval()
    with torch.no_grad():  # move the rationals off their init so that loading them is visible
        for name, p in src.named_parameters():
            if "weight_" in name:
                p.add_(0.05 * torch.randn_like(p))
    sd = {k: v.clone() for k, v in src.state_dict().items()}
    assert {k: tuple(v.shape) for k, v in sd.items()} == _official_keys()
    directory = tmp_path_factory.mktemp("official")
    tmp = directory / "tmp.pth"
    torch.save(sd, tmp)
    path = directory / f"kat_tiny_patch16_224_{file_sha256(tmp)}.pth"
    tmp.rename(path)
    return path, src


def test_released_tags():
    assert sorted(timm.list_pretrained("kat_*")) == sorted(
        f"kat_{s}_patch16_224.{t}" for s in ("tiny", "small", "base") for t in ("in1k", "vitft_in1k")
    )
    for size in ("tiny", "small", "base"):
        assert timm.models.get_pretrained_cfg(f"kat_{size}_patch16_224").tag == "in1k"  # the default tag
    for w in RELEASED_WEIGHTS:
        cfg = timm.models.get_pretrained_cfg(w.name)
        assert cfg.url == HF_BASE_URL + w.filename and w.mirror_url == GITHUB_BASE_URL + w.filename
        assert re.fullmatch(r"[0-9a-f]{64}", w.sha256) and w.sha256 in w.filename
        assert cfg.hf_hub_id == f"adamdad/{w.model}" + (".vitft" if w.tag == "vitft_in1k" else "")
        assert w.filename.startswith(w.model.split("_patch")[0])
    # the official README swaps the T and S scratch links; the official cfgs (and these) do not
    assert TINY.filename.startswith("kat_tiny_patch16_224_1f3ad3b2")
    assert not timm.models.get_pretrained_cfg("kat_tiny_swish_patch16_224").has_weights
    with pytest.raises(RuntimeError, match="no released weights for kat_tiny_swish_patch16_224.*in1k"):
        timm.create_model("kat_tiny_swish_patch16_224", pretrained=True)


def test_official_file_reproduces_logits(official_file, tmp_path):
    """Through timm's pretrained path: a local file, the URL path (file:// URL, download + cache + hash check), a new
    head (num_classes), 1-channel input and features_only, as timm's test_model_load_pretrained does."""
    path, src = official_file
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        ref = src(x)
        model = timm.create_model("kat_tiny_patch16_224", pretrained=True, pretrained_cfg_overlay=dict(file=str(path)))
        torch.testing.assert_close(model.eval()(x), ref, rtol=0, atol=0)
        cache = tmp_path / "cache"
        via_url = timm.create_model(
            "kat_tiny_patch16_224", pretrained=True, pretrained_cfg_overlay=dict(url=path.as_uri()), cache_dir=cache
        )
        torch.testing.assert_close(via_url.eval()(x), ref, rtol=0, atol=0)
        assert (cache / path.name).is_file() and not [p for p in cache.iterdir() if p.name.startswith(".partial")]
        five = timm.create_model(
            "kat_tiny_patch16_224", pretrained=True, num_classes=5, pretrained_cfg_overlay=dict(file=str(path)))
        assert five.head.weight.shape == (5, 192)
        assert torch.equal(five.blocks[3].mlp.act1.weight_denominator, src.blocks[3].mlp.act1.weight_denominator)
        torch.testing.assert_close(five.eval().forward_features(x), src.forward_features(x), rtol=0, atol=0)
        gray = timm.create_model(
            "kat_tiny_patch16_224", pretrained=True, in_chans=1, num_classes=0,
            pretrained_cfg_overlay=dict(file=str(path)))
        assert gray(torch.randn(1, 1, 224, 224)).shape == (1, 192)
        feats = timm.create_model(
            "kat_tiny_patch16_224", pretrained=True, features_only=True, pretrained_cfg_overlay=dict(file=str(path)))
        assert [f.shape for f in feats(x)] == [(2, 192, 14, 14)] * 3


def test_corrupted_file_refused(official_file, tmp_path, monkeypatch):
    path, _ = official_file
    # a damaged copy under the released name, in the cache (as an interrupted manual download would leave it)
    cache = tmp_path / "cache"
    cache.mkdir()
    bad = cache / TINY.filename
    bad.write_bytes(path.read_bytes()[:-100])
    actual = file_sha256(bad)
    with pytest.raises(PretrainedHashError) as err:
        timm.create_model("kat_tiny_patch16_224", pretrained=True, cache_dir=cache)
    message = str(err.value)
    assert actual in message and TINY.sha256 in message
    assert "check_hash=False" in message and "KAT_BACKBONES_CHECK_HASH=0" in message
    # the same for an explicit file, and for a download whose content does not match its name
    with pytest.raises(PretrainedHashError):
        timm.create_model("kat_tiny_patch16_224", pretrained=True, pretrained_cfg_overlay=dict(file=str(bad)))
    other = tmp_path / "cache2"
    with pytest.raises(PretrainedHashError, match="was not kept"):
        timm.create_model(
            "kat_tiny_patch16_224", pretrained=True, cache_dir=other, pretrained_cfg_overlay=dict(url=bad.as_uri()))
    assert not other.exists() or not any(other.iterdir())
    # the documented ways to skip the check: an intact file under another name loads
    renamed = cache / TINY.filename.replace(".pth", "_copy.pth")  # no hash at the end of the name any more
    renamed.write_bytes(path.read_bytes())
    timm.create_model("kat_tiny_patch16_224", pretrained=True, pretrained_cfg_overlay=dict(file=str(renamed)))
    good = cache / "good" / TINY.filename
    good.parent.mkdir()
    good.write_bytes(path.read_bytes())
    timm.create_model(
        "kat_tiny_patch16_224", pretrained=True, check_hash=False, pretrained_cfg_overlay=dict(file=str(good)))
    monkeypatch.setenv("KAT_BACKBONES_CHECK_HASH", "0")
    timm.create_model("kat_tiny_patch16_224", pretrained=True, cache_dir=good.parent)


def test_offline_error_is_fast_and_says_what_to_do(tmp_path, monkeypatch):
    # unreachable source (connection refused): the error names it, the local-file route and the cache directory
    url = f"http://127.0.0.1:9/{TINY.filename}"
    start = time.monotonic()
    with pytest.raises(PretrainedDownloadError) as err:
        timm.create_model(
            "kat_tiny_patch16_224", pretrained=True, cache_dir=tmp_path, pretrained_cfg_overlay=dict(url=url))
    assert time.monotonic() - start < 10
    message = str(err.value)
    assert url in message and "pretrained_cfg_overlay=dict(file=" in message and str(tmp_path) in message
    assert "model.backbone.init_cfg.checkpoint=" in message and "'kat_tiny_patch16_224.in1k'" in message
    # the released cfg with downloads disabled (HF_HUB_OFFLINE): both official locations are named, at once
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    start = time.monotonic()
    with pytest.raises(PretrainedDownloadError) as err:
        timm.create_model("kat_small_patch16_224.vitft_in1k", pretrained=True, cache_dir=tmp_path)
    assert time.monotonic() - start < 10
    w = next(w for w in RELEASED_WEIGHTS if w.name == "kat_small_patch16_224.vitft_in1k")
    assert w.url in str(err.value) and w.mirror_url in str(err.value)


def test_readme_weights_table():
    readme = (CONFIGS.parent / "README.md").read_text()
    for w in RELEASED_WEIGHTS:
        short = f"{w.filename[: w.filename.index(w.sha256) + 8]}…{w.sha256[-5:]}.pth"
        row = next(line for line in readme.splitlines() if line.startswith(f"| `{w.name}` |"))
        assert f"`{short}`" in row and f"`{w.hf_hub_id}`" in row and f"| {w.top1} |" in row, row


@pytest.mark.parametrize(
    "config, size",
    [(f"mmdet/kat_{s[0]}_maskrcnn.py", s) for s in ("tiny", "small", "base")]
    + [(f"mmseg/kat_{s[0]}_upernet.py", s) for s in ("tiny", "small", "base")]
    + [("mmdet/_base_/kat_maskrcnn_lsj_1024.py", "base"), ("mmseg/_base_/upernet_kat_ade20k-512x512.py", "base")],
)
def test_headline_configs_use_released_weights_by_name(config, size):
    init_cfg = Config.fromfile(str(CONFIGS / config)).model.backbone.init_cfg
    name = f"kat_{size}_patch16_224.in1k"
    assert init_cfg.type == "Pretrained" and init_cfg.checkpoint == f"timm:{name}"
    assert timm.models.get_pretrained_cfg(name).url.startswith(HF_BASE_URL)


def test_backbone_loads_released_weights_by_name(official_file, tmp_path, monkeypatch):
    """``checkpoint='timm:kat_tiny_patch16_224.in1k'`` in a det/seg config: timm fetches the file (here found in the
    cache under the released name), the backbone converts it on the fly (cls token and head dropped, pos-embed
    kept at the 224 grid)."""
    from kat_backbones.mm import KATBackbone

    path, src = official_file
    cache = tmp_path / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    (cache / TINY.filename).write_bytes(path.read_bytes())  # random weights under the released name...
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setenv("KAT_BACKBONES_CHECK_HASH", "0")  # ...so their hash cannot match it
    backbone = KATBackbone(
        arch="tiny", img_size=64, window_size=2, out_indices=(11,),
        init_cfg=dict(type="Pretrained", checkpoint=f"timm:{TINY.name}"),
    )
    backbone.init_weights()
    for key in ("blocks.0.attn.qkv.weight", "blocks.7.mlp.act2.weight_denominator", "blocks.11.mlp.fc2.weight"):
        assert torch.equal(backbone.state_dict()[key], src.state_dict()[key]), key
    assert torch.equal(backbone.pos_embed[:, 1:], src.pos_embed[:, 1:])
    assert os.environ["TORCH_HOME"] == str(tmp_path)
