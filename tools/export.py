"""Export a KAT model to ONNX (and a torch.export ``.pt2``), then check the ONNX file with onnxruntime.

    python tools/export.py kat_tiny_patch16_224 --out kat_t.onnx                       # random init
    python tools/export.py kat_tiny_patch16_224 kat_tiny.pth --out kat_t.onnx          # a timm/official checkpoint
    python tools/export.py kat_tiny_patch16_224.in1k --out kat_t.onnx                  # the released weights (download)
    python tools/export.py configs/mmdet/kat_t_maskrcnn.py work_dirs/x/iter_N.pth --out kat_t_det_backbone.onnx

NAME_OR_CONFIG is a timm model name (any timm name; ``NAME.TAG`` loads that tag's pretrained weights) or an
mmdet/mmseg/mmpretrain config (``.py``) whose ``model.backbone`` is the dense KAT backbone: then the backbone alone is
exported (the detector/segmentor around it is mmdeploy's job, see docs/deploy.md), at ``--img-size`` (default 256).
CHECKPOINT (optional) is a file for that model: for a name, a timm / official KAT state dict; for a config, a
detector/segmentor checkpoint (its ``backbone.*`` tensors) or a timm KAT/ViT classification checkpoint.

Exporter (``--exporter``): ``dynamo`` (torch.onnx.export(..., dynamo=True)) by default for timm models; ``legacy``
(the TorchScript-based exporter, dynamo=False) by default for the dense backbone, whose timm SAM-style attention the
dynamo exporter cannot translate in torch 2.13 ("only 4D query, key, and value are supported"). The group-rational op
is written as standard ONNX operators either way. Prints the onnxruntime error (max |ORT - PyTorch| over the output's
max |value|) and exits with status 1 if it exceeds ``--tol``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence

import torch

import kat_backbones  # noqa: F401  (registers the op, its ONNX path and the KAT models)

DENSE_TYPES = ("KATBackbone", "kat_backbones.KATBackbone")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", metavar="NAME_OR_CONFIG", help="timm model name (NAME or NAME.TAG) or a config .py")
    p.add_argument("checkpoint", nargs="?", help="checkpoint file for the model (optional)")
    p.add_argument("--out", required=True, help="output .onnx file (the .pt2 goes next to it)")
    p.add_argument("--img-size", type=int, default=None,
                   help="input height = width (default: the timm model's input size; 256 for a config)")
    p.add_argument("--batch", type=int, default=1, help="batch size of the example input (default 1)")
    p.add_argument("--exporter", choices=["auto", "dynamo", "legacy"], default="auto",
                   help="auto: dynamo for timm models, legacy for the dense backbone of a config")
    p.add_argument("--opset", type=int, default=None, help="ONNX opset (default: the exporter's, >= 17)")
    p.add_argument("--no-pt2", action="store_true", help="do not write the torch.export .pt2 file")
    p.add_argument("--tol", type=float, default=1e-4,
                   help="largest accepted onnxruntime error relative to the output's max |value| (default 1e-4)")
    args = p.parse_args(argv)
    if args.img_size is not None and args.img_size < 16:
        p.error(f"--img-size must be at least 16 (one patch), got {args.img_size}")
    if args.batch < 1:
        p.error(f"--batch must be >= 1, got {args.batch}")
    if args.opset is not None and args.opset < 17:
        p.error(f"--opset must be >= 17 (LayerNormalization), got {args.opset}")
    if args.checkpoint is not None and not os.path.isfile(args.checkpoint):
        p.error(f"checkpoint {args.checkpoint!r} does not exist")
    return args


def build_timm(name: str, checkpoint: str | None, img_size: int | None) -> tuple[torch.nn.Module, int]:
    """A timm model by name (``NAME.TAG`` with pretrained weights), optionally from a checkpoint file."""
    import timm

    kwargs = {} if img_size is None else {"img_size": img_size}
    if checkpoint is not None:
        model = timm.create_model(name, pretrained=True, pretrained_cfg_overlay=dict(file=checkpoint), **kwargs)
    else:
        model = timm.create_model(name, pretrained="." in name, **kwargs)
    size = img_size or model.pretrained_cfg.get("input_size", (3, 224, 224))[-1]
    return model, size


def build_dense(config: str, checkpoint: str | None, img_size: int | None) -> tuple[torch.nn.Module, int]:
    """The dense KAT backbone of an OpenMMLab config (init_cfg ignored: weights come from CHECKPOINT or stay random)."""
    from mmengine.config import Config

    from kat_backbones.checkpoint import read_state_dict
    from kat_backbones.models.dense import KATDense

    cfg = Config.fromfile(config)
    backbone = cfg.get("model", {}).get("backbone")
    if backbone is None or backbone.get("type") not in DENSE_TYPES:
        raise ValueError(f"{config}: model.backbone must be the dense KAT backbone (type kat_backbones.KATBackbone), "
                         f"got {None if backbone is None else backbone.get('type')!r}")
    kwargs = {k: v for k, v in backbone.to_dict().items() if k not in ("type", "init_cfg", "_delete_")}
    size = img_size or 256
    kwargs["img_size"] = size
    model = KATDense(**kwargs)
    if checkpoint is not None:
        state = read_state_dict(checkpoint)
        if any(k.startswith("backbone.") for k in state):  # a detector / segmentor checkpoint
            sub = {k[len("backbone."):]: v for k, v in state.items() if k.startswith("backbone.")}
            model.load_state_dict(sub, strict=True)
        else:  # a timm KAT / ViT classification checkpoint, converted like init_cfg's Pretrained
            model.load_pretrained(state)
    return model, size


def export_onnx(model: torch.nn.Module, example: torch.Tensor, path: str, dynamo: bool, opset: int | None) -> float:
    """``torch.onnx.export`` with no extra arguments beyond the opset; returns the seconds it took."""
    t0 = time.perf_counter()
    kwargs = {} if opset is None else {"opset_version": opset}
    if dynamo:
        torch.onnx.export(model, (example,), path, dynamo=True, verbose=False, **kwargs)
    else:
        torch.onnx.export(model, (example,), path, dynamo=False, **kwargs)
    return time.perf_counter() - t0


def export_pt2(model: torch.nn.Module, example: torch.Tensor, path: str) -> float:
    """torch.export save/load round trip: writes ``path`` and checks the reloaded program reproduces the model."""
    t0 = time.perf_counter()
    program = torch.export.export(model, (example,))
    torch.export.save(program, path)
    loaded = torch.export.load(path)
    with torch.no_grad():
        want, got = _as_list(model(example)), _as_list(loaded.module()(example))
    for w, g in zip(want, got):
        torch.testing.assert_close(g, w, rtol=1e-5, atol=1e-6 * float(w.abs().max()))
    return time.perf_counter() - t0


def _as_list(out) -> list[torch.Tensor]:
    return list(out) if isinstance(out, Sequence) else [out]


def onnxruntime_error(path: str, model: torch.nn.Module, example: torch.Tensor) -> list[float]:
    """max |ORT - PyTorch| / max |PyTorch| for each output."""
    import onnxruntime as ort

    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    outs = session.run(None, {session.get_inputs()[0].name: example.numpy()})
    with torch.no_grad():
        want = _as_list(model(example))
    if len(outs) != len(want):
        raise RuntimeError(f"{path}: onnxruntime returned {len(outs)} outputs, PyTorch {len(want)}")
    errs = []
    for o, w in zip(outs, want):
        w = w.double()
        errs.append(float((torch.from_numpy(o).double() - w).abs().max() / w.abs().max().clamp_min(1e-30)))
    return errs


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    is_config = args.model.endswith(".py")
    if is_config:
        model, size = build_dense(args.model, args.checkpoint, args.img_size)
    else:
        model, size = build_timm(args.model, args.checkpoint, args.img_size)
    model = model.eval()
    dynamo = args.exporter == "dynamo" or (args.exporter == "auto" and not is_config)
    torch.manual_seed(0)
    example = torch.randn(args.batch, 3, size, size)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    secs = export_onnx(model, example, args.out, dynamo, args.opset)
    print(f"[export] {args.model} -> {args.out} ({'dynamo' if dynamo else 'legacy'} exporter, input "
          f"{tuple(example.shape)}, {secs:.1f} s)")
    if not args.no_pt2:
        pt2 = os.path.splitext(args.out)[0] + ".pt2"
        secs = export_pt2(model, example, pt2)
        print(f"[export] torch.export -> {pt2} (save/load round trip checked, {secs:.1f} s)")
    errs = onnxruntime_error(args.out, model, example)
    worst = max(errs)
    print(f"[export] onnxruntime vs PyTorch: max |error| / max |output| = {', '.join(f'{e:.2e}' for e in errs)} "
          f"(tolerance {args.tol:.0e})")
    if not worst <= args.tol:
        print(f"[export] FAILED: onnxruntime error {worst:.2e} exceeds --tol {args.tol:.0e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
