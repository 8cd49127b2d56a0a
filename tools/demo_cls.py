"""Classification demo on CPU: KAT-T from scratch on the synthetic ImageFolder set through mmengine's Runner.

    python tools/demo_cls.py                  # or: make demo-cls
    python tools/demo_cls.py --epochs 4       # shorter
    python tools/demo_cls.py --threads 0      # torch's default thread count (default: 1 thread)

Writes the demo set to ``DATA/imagenet_demo`` if it is missing (:mod:`kat_backbones.apps.demo_data.imagenet`), evaluates
the untrained model (the chance baseline), trains ``configs/imagenet/kat_t_demo.py`` with the Runner's progress log,
evaluates again and ends with one line::

    demo-cls: accuracy/top1=... accuracy/top2=... untrained_top1=... iters=... time=...s

The flow the three demos share (config, schedule, untrained baseline, training) is :mod:`kat_backbones.apps.demo`.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "configs" / "imagenet" / "kat_t_demo.py"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="data", help="data directory (default: data)")
    parser.add_argument("--work-dir", default="work_dirs/kat_t_demo", help="logs and checkpoint")
    parser.add_argument("--epochs", type=int, default=None, help="training epochs (default: the config's)")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="intra-op threads (default: 1; a KAT-T step at 64 px is many small ops, and on a small or shared machine "
        "OpenMP threads spin-waiting for each other made it several times slower; 0 = torch's default)",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")  # the demo is a CPU job: no GPU before torch is imported
    start = time.perf_counter()

    from kat_backbones.apps import demo
    from kat_backbones.apps.demo_data.imagenet import IMAGENET_DEMO_SUBDIR, make_imagenet_demo

    data_root = Path(args.data) / IMAGENET_DEMO_SUBDIR
    cfg = demo.load_config(CONFIG, args.work_dir, str(data_root), args.threads)
    demo.ensure_data("demo-cls", data_root, ("train", "val"), lambda: make_imagenet_demo(args.data))
    if args.epochs is not None:
        demo.shorten_schedule(cfg, args.epochs)

    runner, untrained = demo.evaluate_untrained(cfg, "demo-cls", ("accuracy/top1",), digits=1)
    metrics = demo.train(runner, ("accuracy/top1", "accuracy/top2"))  # validates at the end (val_interval)
    elapsed = time.perf_counter() - start
    print(
        f"demo-cls: accuracy/top1={metrics['accuracy/top1']:.1f} accuracy/top2={metrics['accuracy/top2']:.1f} "
        f"untrained_top1={untrained['accuracy/top1']:.1f} iters={runner.iter} time={elapsed:.0f}s",
        flush=True,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
