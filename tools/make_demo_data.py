"""Write the synthetic demo data sets (COCO-layout instances, ADE20K-layout semantic segmentation) under ``--out``.

    python tools/make_demo_data.py                       # both, default sizes, into data/
    python tools/make_demo_data.py --task coco --num-train 16 --num-val 4 --size 256
    python tools/make_demo_data.py --task ade --out /tmp/data --seed 1

COCO goes to ``OUT/coco_demo`` (see :mod:`kat_backbones.apps.demo_data.coco`), ADE20K to
``OUT/ade/ADEChallengeData2016`` (see :mod:`kat_backbones.apps.demo_data.ade`). Each generator is imported only when
its task runs. Without ``--num-train``, ``--num-val`` and ``--size`` each generator uses its own defaults.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path

# (module, function) per task; imported lazily so that one missing generator only fails its own task
TASKS = {
    "coco": ("kat_backbones.apps.demo_data.coco", "make_coco_demo"),
    "ade": ("kat_backbones.apps.demo_data.ade", "make_ade_demo"),
    "imagenet": ("kat_backbones.apps.demo_data.imagenet", "make_imagenet_demo"),
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="data", help="data directory (default: data)")
    parser.add_argument("--task", choices=[*TASKS, "all"], default="all", help="which set to write (default: all)")
    parser.add_argument("--num-train", type=int, default=None, help="training images (default: generator's)")
    parser.add_argument("--num-val", type=int, default=None, help="validation images (default: generator's)")
    parser.add_argument("--size", type=int, default=None, help="image side in pixels (default: generator's)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    sizes = dict(num_train=args.num_train, num_val=args.num_val, size=args.size)
    kwargs = {k: v for k, v in sizes.items() if v is not None}
    tasks = list(TASKS) if args.task == "all" else [args.task]
    for task in tasks:
        module_name, func_name = TASKS[task]
        make = getattr(importlib.import_module(module_name), func_name)
        root = make(Path(args.out), seed=args.seed, **kwargs)
        print(f"{task}: wrote {root}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
