#!/usr/bin/env python
"""Parameters and GFLOPs of a registered timm model (KAT, ViT, ...) or of an OpenMMLab config file.

    python tools/get_flops.py kat_tiny_patch16_224
    python tools/get_flops.py configs/mmseg/kat_t_upernet.py --shape 512 512

Two numbers are printed (one FLOP per multiply-accumulate, counted with forward hooks by
:mod:`kat_backbones.flops`):

- the paper's convention (as KAT reports with fvcore): linear/conv MACs + LayerNorm (5/element) + 21 FLOPs per
  element of each rational, attention matmuls NOT counted;
- the full count, adding the attention matmuls q @ k^T and attn @ v.

For a config file (a path ending in .py) the model is built with mmengine's Config and registries (the
``kat_backbones.mm`` glue must be importable) and the backbone + neck are measured (``model.extract_feat``) when the
model has it, otherwise ``model(x)``.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

import kat_backbones  # noqa: F401  (registers the KAT models)
from kat_backbones.flops import FlopReport, count_flops


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parses the command line."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("target", help="a timm model name (e.g. kat_tiny_patch16_224) or a config file (*.py)")
    parser.add_argument("--shape", type=int, nargs="+", default=None, metavar="S",
                        help="input H W (or one size); default: the model's input size, 512 512 for configs")
    parser.add_argument("--batch", type=int, default=1, help="batch size (default: 1)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    return parser.parse_args(argv)


def _hw(shape: list[int] | None, default: tuple[int, int]) -> tuple[int, int]:
    if not shape:
        return default
    if len(shape) == 1:
        return shape[0], shape[0]
    if len(shape) == 2:
        return shape[0], shape[1]
    raise SystemExit(f"get_flops: --shape takes one or two sizes, got {shape}")


def build_timm_target(name: str, shape: list[int] | None, batch: int) -> tuple[nn.Module, Callable[[], Any], str]:
    """Builds a registered timm model and the forward pass to measure."""
    import timm

    if not timm.is_model(name):
        raise SystemExit(f"get_flops: {name!r} is neither a registered timm model nor a .py config file")
    kwargs = {}
    if shape:
        h, w = _hw(shape, (224, 224))
        kwargs["img_size"] = (h, w)
    model = timm.create_model(name, pretrained=False, **kwargs)
    in_chans, h, w = model.pretrained_cfg.get("input_size", (3, 224, 224)) if not shape else (3, *_hw(shape, (0, 0)))
    x = torch.randn(batch, in_chans, h, w)
    return model, lambda: model(x), f"{name} @ {batch}x{in_chans}x{h}x{w}"


def build_config_target(path: str, shape: list[int] | None, batch: int) -> tuple[nn.Module, Callable[[], Any], str]:
    """Builds the model of an OpenMMLab config (through ``kat_backbones.mm``) and the forward pass to measure."""
    try:
        from mmengine.config import Config
        from mmengine.registry import MODELS, init_default_scope

        import kat_backbones.mm  # noqa: F401  (registers the kat_backbones scope)
    except ImportError as err:
        raise SystemExit(
            f"get_flops: config files need the OpenMMLab glue (kat_backbones.mm with mmengine/mmcv/mmdet/mmseg), "
            f"which could not be imported: {err}"
        ) from None
    cfg = Config.fromfile(path)
    init_default_scope(cfg.get("default_scope", "mmdet"))
    model = MODELS.build(cfg.model)
    h, w = _hw(shape, (512, 512))
    x = torch.randn(batch, 3, h, w)
    # parameters per top-level part (backbone / neck / heads), e.g. a detector's rpn_head and roi_head
    parts = [(name, sum(p.numel() for p in child.parameters())) for name, child in model.named_children()]
    total = sum(p.numel() for p in model.parameters())
    params = ", ".join([f"{name} {n / 1e6:.2f} M" for name, n in parts if n] + [f"total {total / 1e6:.2f} M"])
    if hasattr(model, "extract_feat"):
        description = f"{path} (FLOPs: backbone + neck; params: whole model) @ {batch}x3x{h}x{w}\nparams: {params}"
        return model, lambda: model.extract_feat(x), description
    return model, lambda: model(x), f"{path} @ {batch}x3x{h}x{w}\nparams: {params}"


def measure(target: str, shape: list[int] | None = None, batch: int = 1) -> tuple[FlopReport, str]:
    """Counts the FLOPs of ``target`` (model name or .py config). Returns the report and a description."""
    build = build_config_target if target.endswith(".py") else build_timm_target
    model, forward, description = build(target, shape, batch)
    return count_flops(model, forward=forward), description


def main(argv: list[str] | None = None) -> int:
    """Prints parameters and GFLOPs."""
    args = parse_args(argv)
    report, description = measure(args.target, args.shape, args.batch)
    if args.json:
        print(json.dumps({
            "target": args.target, "input": description, "params": report.params,
            "gflops_paper": report.paper / 1e9, "gflops_full": report.full / 1e9,
            "gflops_by_kind": {k: v / 1e9 for k, v in report.flops.items()},
        }))
        return 0
    print(description)
    print(report.summary())
    return 0


if __name__ == "__main__":
    sys.exit(main())
