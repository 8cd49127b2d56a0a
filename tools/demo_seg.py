"""Segmentation demo on CPU: KAT-T UperNet from scratch on the synthetic ADE20K-layout set through mmengine's Runner.

    python tools/demo_seg.py                  # or: make demo-seg
    python tools/demo_seg.py --iters 200      # shorter
    python tools/demo_seg.py --threads 0      # torch's default thread count (default: 1 thread)

Writes the demo set to ``DATA/ade/ADEChallengeData2016`` if it is missing (:mod:`kat_backbones.apps.demo_data.ade`),
evaluates the untrained model, trains ``configs/mmseg/kat_t_upernet_demo.py`` with the Runner's progress log, evaluates
again (IoUMetric over the 5 demo classes) and ends with one line::

    demo-seg: mIoU=... aAcc=... untrained_mIoU=... iters=... time=...s
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
    os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")  # the demo is a CPU job
    start = time.perf_counter()

    import torch
    from mmengine.config import Config
    from mmengine.runner import Runner

    from kat_backbones.apps.demo_data.ade import ADE_SUBDIR, make_ade_demo
    from kat_backbones.mm import convert_cfg_for_cpu

    if args.threads > 0:
        torch.set_num_threads(args.threads)
    data_root = Path(args.data) / ADE_SUBDIR
    if not (data_root / "images" / "validation").is_dir():
        print(f"demo-seg: writing the demo set to {data_root}", flush=True)
        make_ade_demo(args.data)

    cfg = Config.fromfile(str(CONFIG))
    cfg.work_dir = args.work_dir
    for loader in ("train_dataloader", "val_dataloader", "test_dataloader"):
        cfg[loader].dataset.data_root = str(data_root)
    if args.iters is not None:
        cfg.train_cfg.max_iters = cfg.train_cfg.val_interval = args.iters
        warmup = min(cfg.param_scheduler[0].end, max(1, args.iters // 5))
        cfg.param_scheduler[0].end = cfg.param_scheduler[-1].begin = warmup
        cfg.param_scheduler[-1].end = args.iters
        cfg.default_hooks.checkpoint.interval = args.iters
    convert_cfg_for_cpu(cfg)

    runner = Runner.from_cfg(cfg)
    untrained = runner.val()
    print(f"demo-seg: untrained mIoU={untrained['mIoU']:.1f}", flush=True)
    runner.train()  # validates every val_interval iterations, the last time at the end
    hub = runner.message_hub
    metrics = {k: hub.get_scalar(f"val/{k}").current() for k in ("mIoU", "aAcc")}
    print(
        f"demo-seg: mIoU={metrics['mIoU']:.1f} aAcc={metrics['aAcc']:.1f} untrained_mIoU={untrained['mIoU']:.1f} "
        f"iters={runner.iter} time={time.perf_counter() - start:.0f}s",
        flush=True,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
