"""Command-line tools of the KAT models: fit_rational, convert_checkpoint, get_flops, benchmark_kat."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import timm
import torch

import kat_backbones  # noqa: F401
from kat_backbones.checkpoint import read_state_dict
from kat_backbones.layers import get_rational_init
from kat_backbones.layers.rational_fit import max_abs_error
from tools import convert_checkpoint, fit_rational, get_flops

ROOT = Path(__file__).resolve().parents[1]


def test_fit_rational_cli_reproduces_packaged_gelu(capsys):
    """The packaged gelu entry comes from `fit_rational.py --fn gelu --order 5 4 --range -3 3`."""
    assert fit_rational.main(["--fn", "gelu", "--order", "5", "4", "--range", "-3", "3", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert len(out["numerator"]) == 6 and len(out["denominator"]) == 4
    packaged = max_abs_error("gelu", *get_rational_init("gelu"))
    assert out["max_error"] <= 1.05 * packaged
    assert max_abs_error("gelu", out["numerator"], out["denominator"]) == pytest.approx(out["max_error"], rel=1e-3)


def test_fit_rational_cli_text(capsys):
    fit_rational.main(["--fn", "tanh", "--order", "3", "2", "--weighting", "gaussian", "--max-iter", "200"])
    text = capsys.readouterr().out
    assert "max error on [-3, 3]" in text and "numerator" in text and "denominator" in text


def test_convert_checkpoint_cli(tmp_path, capsys):
    torch.manual_seed(0)
    vit = timm.create_model("vit_tiny_patch16_224")
    src, dst = tmp_path / "vit.pth", tmp_path / "kat.safetensors"
    torch.save({"model": vit.state_dict()}, src)
    assert convert_checkpoint.main([str(src), str(dst), "--model", "kat_tiny_gelu_patch16_224"]) == 0
    assert "ViT -> KAT transfer" in capsys.readouterr().out
    sd = read_state_dict(dst)
    kat = timm.create_model("kat_tiny_gelu_patch16_224")
    kat.load_state_dict(sd, strict=True)
    assert torch.equal(kat.blocks[2].mlp.fc2.weight, vit.blocks[2].mlp.fc2.weight)
    num, _ = get_rational_init("gelu")
    torch.testing.assert_close(kat.blocks[2].mlp.act2.weight_numerator[0], torch.tensor(num, dtype=torch.float32))
    # a KAT checkpoint is re-saved (pth out)
    dst2 = tmp_path / "kat_again.pth"
    assert convert_checkpoint.main([str(dst), str(dst2), "--model", "kat_tiny_gelu_patch16_224"]) == 0
    assert torch.equal(read_state_dict(dst2)["blocks.0.mlp.act2.weight_numerator"],
                       sd["blocks.0.mlp.act2.weight_numerator"])


def test_get_flops_model_name(capsys):
    assert get_flops.main(["kat_tiny_patch16_224", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["params"] == 5_718_328
    assert abs(out["gflops_paper"] - 1.13) / 1.13 < 0.01
    assert out["gflops_full"] > out["gflops_paper"] + 0.17
    get_flops.main(["vit_tiny_patch16_224", "--shape", "112"])
    text = capsys.readouterr().out
    assert "1x3x112x112" in text and "paper convention" in text


def test_get_flops_errors():
    with pytest.raises(SystemExit, match="neither a registered timm model"):
        get_flops.main(["not_a_model_at_all"])


@pytest.mark.slow
def test_get_flops_config_file(capsys, tmp_path):
    """A .py target is built through mmengine + the kat_backbones registry scope (when the mm glue imports)."""
    pytest.importorskip("mmseg")
    try:
        import kat_backbones.mm  # noqa: F401
    except ImportError as err:
        pytest.skip(f"kat_backbones.mm not importable: {err}")
    cfg = tmp_path / "backbone_only.py"
    cfg.write_text(
        "default_scope = 'mmseg'\n"
        "model = dict(type='mmseg.EncoderDecoder',\n"
        "             backbone=dict(type='mmseg.ResNetV1c', depth=18, num_stages=4, out_indices=(0, 1, 2, 3)),\n"
        "             decode_head=dict(type='mmseg.FCNHead', in_channels=512, channels=64, num_classes=3))\n"
    )
    assert get_flops.main([str(cfg), "--shape", "64", "64", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert "backbone + neck" in out["input"] and out["gflops_by_kind"]["conv"] > 0 and out["params"] > 1e7


@pytest.mark.slow
def test_benchmark_kat_runs():
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    cmd = [sys.executable, str(ROOT / "tools" / "benchmark_kat.py"), "--batch", "2", "--img-size", "32", "--steps",
           "1", "--warmup", "0", "--infer-steps", "2"]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env, timeout=300).stdout
    for what in ("train step time", "batch-1 inference time", "activation memory", "peak memory"):
        assert f"{what} ratio kat_tiny_patch16_224 / vit_tiny_patch16_224" in out
    # the default GR-KAN (LayerNorm + act1 fused) keeps no more activations for backward than the ViT
    ratio = next(line for line in out.splitlines() if line.startswith("activation memory ratio"))
    assert float(ratio.split()[-1].rstrip("x")) <= 1.0
