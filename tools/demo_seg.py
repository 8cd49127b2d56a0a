"""Segmentation demo on CPU: KAT-T UperNet from scratch on the synthetic ADE20K-layout set through mmengine's Runner.

    python tools/demo_seg.py                  # or: make demo-seg
    python tools/demo_seg.py --iters 200      # shorter
    python tools/demo_seg.py --threads 0      # torch's default thread count (default: 1 thread)

Writes the demo set to ``DATA/ade/ADEChallengeData2016`` if it is missing (:mod:`kat_backbones.apps.demo_data.ade`),
evaluates the untrained model, trains ``configs/mmseg/kat_t_upernet_demo.py`` with the Runner's progress log, evaluates
again (IoUMetric over the 5 demo classes) and ends with one line::

    demo-seg: mIoU=... aAcc=... untrained_mIoU=... iters=... time=...s

The flow the three demos share (config, schedule, untrained baseline, training) is :mod:`kat_backbones.apps.demo`.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "configs" / "mmseg" / "kat_t_upernet_demo.py"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="data", help="data directory (default: data)")
    parser.add_argument("--work-dir", default="work_dirs/kat_t_upernet_demo", help="logs and checkpoint")
    parser.add_argument("--iters", type=int, default=None, help="training iterations (default: the config's)")
    parser.add_argument("--threads", type=int, default=1,
                        help="intra-op threads (default: 1, fastest for these small steps on 2 cores; 0 = torch's)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")  # the demo is a CPU job: no GPU before torch is imported
    start = time.perf_counter()

    from kat_backbones.apps import demo
    from kat_backbones.apps.demo_data.ade import ADE_SUBDIR, make_ade_demo

    data_root = Path(args.data) / ADE_SUBDIR
    cfg = demo.load_config(CONFIG, args.work_dir, str(data_root), args.threads)
    demo.ensure_data("demo-seg", data_root, ("images/validation",), lambda: make_ade_demo(args.data))
    if args.iters is not None:
        demo.shorten_schedule(cfg, args.iters)

    runner, untrained = demo.evaluate_untrained(cfg, "demo-seg", ("mIoU",), digits=1)
    metrics = demo.train(runner, ("mIoU", "aAcc"))  # validates every val_interval iterations and at the end
    print(
        f"demo-seg: mIoU={metrics['mIoU']:.1f} aAcc={metrics['aAcc']:.1f} untrained_mIoU={untrained['mIoU']:.1f} "
        f"iters={runner.iter} time={time.perf_counter() - start:.0f}s",
        flush=True,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
