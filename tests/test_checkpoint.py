"""kat_backbones.checkpoint, the one checkpoint reader: sources, unwrapping, errors. Tiny tensors, CPU, no downloads."""

from __future__ import annotations

import pickle

import pytest
import torch

from kat_backbones.checkpoint import (
    CorruptCheckpointError,
    UnsafeCheckpointError,
    read_checkpoint,
    read_state_dict,
    save_state_dict,
    unwrap_state_dict,
)

STATE = {"blocks.0.mlp.fc1.weight": torch.arange(6.0).reshape(2, 3), "pos_embed": torch.ones(1, 2, 3)}


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_round_trip(tmp_path, suffix):
    path = tmp_path / f"w{suffix}"
    save_state_dict(STATE, path)
    loaded = read_state_dict(path)
    assert loaded.keys() == STATE.keys() and all(torch.equal(loaded[k], STATE[k]) for k in STATE)
    assert read_checkpoint(str(path)).keys() == STATE.keys()


@pytest.mark.parametrize(
    "wrap",
    [
        lambda sd: {"state_dict": sd, "meta": {"epoch": 3}},  # mmengine / timm train.py
        lambda sd: {"model": {"module": sd}},  # nested containers
        lambda sd: {f"module.{k}": v for k, v in sd.items()},  # DistributedDataParallel
        lambda sd: {"state_dict": {f"model.{k}": v for k, v in sd.items()}},  # an mmengine wrapper (TimmClassifier)
        lambda sd: {f"module.backbone.{k}": v for k, v in sd.items()},  # a DDP-saved backbone
    ],
    ids=["state_dict", "nested", "module.", "model.", "module.backbone."],
)
def test_unwrap(tmp_path, wrap):
    torch.save(wrap(STATE), tmp_path / "w.pth")
    assert read_state_dict(tmp_path / "w.pth").keys() == STATE.keys()


def test_prefixes_kept_unless_shared_by_every_key():
    detector = {"backbone.pos_embed": torch.zeros(1), "neck.conv.weight": torch.zeros(1), "step": 5}
    assert unwrap_state_dict(detector) == {k: v for k, v in detector.items() if k != "step"}
    saved_backbone = {f"backbone.{k}": v for k, v in STATE.items()}
    assert unwrap_state_dict(saved_backbone, strip_prefixes=()).keys() == saved_backbone.keys()


def test_errors_name_the_problem(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.pth does not exist"):
        read_state_dict(tmp_path / "missing.pth")
    with pytest.raises(ValueError, match="not a registered timm model"):
        read_state_dict("timm:no_such_model_anywhere")
    with pytest.raises(ValueError, match="no pretrained weights"):
        read_state_dict("timm:kat_tiny_swish_patch16_224")  # registered, but no released weights in its cfg
    with pytest.raises(TypeError, match="source must be a path"):
        read_state_dict(3)
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    with pytest.raises(CorruptCheckpointError, match="bad.safetensors is truncated"):
        read_checkpoint(bad)
    torch.save([torch.zeros(1)], tmp_path / "list.pth")
    with pytest.raises(TypeError, match="not a state dict"):
        read_state_dict(tmp_path / "list.pth")


class _Payload:
    def __reduce__(self):
        return print, ("never runs",)


def test_pickled_callable_is_refused(tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"w": torch.zeros(1), "x": _Payload()}, path)
    with pytest.raises(UnsafeCheckpointError, match="references the global print") as info:
        read_state_dict(path)
    assert isinstance(info.value, pickle.UnpicklingError) and info.value.path == str(path)
