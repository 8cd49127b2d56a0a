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
model has it, otherwise ``model(x)`` (:mod:`kat_backbones.apps.complexity`, shared with ``tools/ablate.py``).
"""

from __future__ import annotations

import argparse
import json
import sys

from kat_backbones.apps.complexity import build_target, measure, parse_hw


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parses the command line."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("target", help="a timm model name (e.g. kat_tiny_patch16_224) or a config file (*.py)")
    parser.add_argument("--shape", type=int, nargs="+", default=None, metavar="S",
                        help="input H W (or one size); default: the model's input size, 512 512 for configs")
    parser.add_argument("--batch", type=int, default=1, help="batch size (default: 1)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Prints parameters and GFLOPs."""
    args = parse_args(argv)
    try:
        hw = parse_hw(args.shape)
        if hw is None and args.target.endswith(".py"):
            hw = (512, 512)
        target = build_target(args.target, hw, args.batch)
    except (ValueError, ImportError) as err:
        raise SystemExit(f"get_flops: {err}") from None
    report = measure(target)
    if args.json:
        print(json.dumps({
            "target": args.target, "input": target.description, "params": report.params,
            "gflops_paper": report.paper / 1e9, "gflops_full": report.full / 1e9,
            "gflops_by_kind": {k: v / 1e9 for k, v in report.flops.items()},
        }))
        return 0
    print(target.description)
    print(report.summary())
    return 0


if __name__ == "__main__":
    sys.exit(main())
