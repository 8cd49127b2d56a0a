"""Export: plain torch.onnx.export (both exporters) to standard ONNX ops, onnxruntime agreement, torch.export round
trip, and tools/export.py end to end. Small inputs (32 px for KAT-T, a 2-block dense backbone at 256 px)."""

from __future__ import annotations

import os
import textwrap
import warnings

import numpy as np
import pytest
import timm
import torch

import kat_backbones  # noqa: F401
from kat_backbones.layers import GroupRational
from tools import export as export_tool

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# What the op may become: standard-domain arithmetic plus the reshapes/slices that place the coefficients.
OP_TYPES = {"Abs", "Mul", "Add", "Div", "Reshape", "Slice", "Gather", "Squeeze", "Unsqueeze", "Expand", "Cast",
            "Concat", "Shape", "Constant", "ConstantOfShape", "Identity", "Split", "Equal", "Where", "Mod"}


def _export(model, x, path, dynamo):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # exporter deprecation / tracer chatter
        if dynamo:
            torch.onnx.export(model, (x,), path, dynamo=True, verbose=False)
        else:
            torch.onnx.export(model, (x,), path, dynamo=False)


def _ort_error(path, model, x):
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    out = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
    with torch.no_grad():
        want = model(x).numpy()
    return float(np.abs(out - want).max() / np.abs(want).max())


def _opset(model_proto):
    return next(o.version for o in model_proto.opset_import if o.domain in ("", "ai.onnx"))


@pytest.mark.parametrize("dynamo", [False, True], ids=["legacy", "dynamo"])
def test_group_rational_becomes_standard_onnx_ops(tmp_path, dynamo):
    torch.manual_seed(0)
    act = GroupRational(num_groups=4, init="swish").eval()
    with torch.no_grad():
        act.weight_denominator.add_(0.1 * torch.randn_like(act.weight_denominator))
    x = torch.randn(2, 5, 16) * 3
    path = str(tmp_path / "act.onnx")
    _export(act, x, path, dynamo)
    proto = onnx.load(path)
    onnx.checker.check_model(proto)
    domains = {n.domain for n in proto.graph.node}
    assert domains <= {"", "ai.onnx"}, domains  # no custom domain
    types = {n.op_type for n in proto.graph.node}
    assert {"Abs", "Mul", "Add", "Div"} <= types and types <= OP_TYPES, types
    assert _opset(proto) >= 17
    assert _ort_error(path, act, x) <= 1e-6


@pytest.fixture(scope="module")
def kat_tiny():
    torch.manual_seed(0)
    return timm.create_model("kat_tiny_patch16_224", img_size=32).eval()


@pytest.mark.parametrize("dynamo", [False, True], ids=["legacy", "dynamo"])
def test_kat_tiny_plain_onnx_export_matches_onnxruntime(tmp_path, kat_tiny, dynamo):
    """`import kat_backbones` is all it takes: the plain call, no custom opset or translation table."""
    x = torch.randn(2, 3, 32, 32)
    path = str(tmp_path / "kat_t.onnx")
    _export(kat_tiny, x, path, dynamo)
    proto = onnx.load(path, load_external_data=False)
    assert {n.domain for n in proto.graph.node} <= {"", "ai.onnx"}
    assert _opset(proto) >= 17
    assert _ort_error(path, kat_tiny, x) <= 1e-4


def test_export_tool_timm_name_with_torch_export_round_trip(tmp_path, capsys):
    out = tmp_path / "kat_t.onnx"
    rc = export_tool.main(["kat_tiny_patch16_224", "--img-size", "32", "--exporter", "legacy", "--out", str(out)])
    assert rc == 0
    text = capsys.readouterr().out
    assert "save/load round trip checked" in text and "onnxruntime vs PyTorch" in text
    assert out.is_file() and out.with_suffix(".pt2").is_file()
    # The .pt2 loads again (the op is registered by `import kat_backbones`) and runs.
    program = torch.export.load(str(out.with_suffix(".pt2")))
    assert program.module()(torch.randn(1, 3, 32, 32)).shape == (1, 1000)


def test_export_tool_dense_backbone_config_legacy_256(tmp_path, capsys):
    """The dense backbone of a det config (a 2-block variant to keep it fast) at 256 px, legacy exporter, with a
    detector-style checkpoint (backbone.* keys)."""
    cfg = tmp_path / "tiny_det.py"
    cfg.write_text(textwrap.dedent(f"""
        _base_ = [{os.path.join(REPO, 'configs', 'mmdet', 'kat_t_maskrcnn.py')!r}]
        model = dict(backbone=dict(arch=dict(_delete_=True, embed_dims=64, depth=2, num_heads=2),
                                   global_blocks=(1,), out_indices=(1,)))
    """))
    model, _ = export_tool.build_dense(str(cfg), None, 256)
    ckpt = tmp_path / "det.pth"
    torch.save({"state_dict": {f"backbone.{k}": v for k, v in model.state_dict().items()}}, ckpt)
    out = tmp_path / "det_backbone.onnx"
    rc = export_tool.main([str(cfg), str(ckpt), "--out", str(out)])
    text = capsys.readouterr().out
    assert rc == 0, text
    assert "legacy exporter, input (1, 3, 256, 256)" in text
    err = float(text.split("max |output| = ")[1].split()[0].rstrip(","))
    assert err <= 1e-4


def test_export_tool_rejects_bad_arguments(tmp_path):
    with pytest.raises(SystemExit):
        export_tool.parse_args(["kat_tiny_patch16_224", "missing.pth", "--out", str(tmp_path / "x.onnx")])
    with pytest.raises(SystemExit):
        export_tool.parse_args(["kat_tiny_patch16_224", "--opset", "13", "--out", str(tmp_path / "x.onnx")])
    cfg = tmp_path / "cls.py"
    cfg.write_text("model = dict(backbone=dict(type='ResNet'))\n")
    with pytest.raises(ValueError, match="must be the dense KAT backbone"):
        export_tool.build_dense(str(cfg), None, 256)
