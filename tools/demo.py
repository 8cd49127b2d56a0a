"""Detection demo on CPU (`make demo`): KAT-T ViTDet Mask R-CNN trained from scratch on the synthetic COCO-layout set.

    python tools/demo.py                     # or: make demo
    python tools/demo.py --iters 100         # shorter
    python tools/demo.py --threads 2         # intra-op threads (0 = torch's default)

Steps: writes the demo set to ``DATA/coco_demo`` if it is missing or was written with other settings
(:mod:`kat_backbones.apps.demo_data.coco`: 3 shape classes, one hue per class, shapes 38-90 px on 160 px images),
evaluates the untrained model once (CocoMetric bbox + segm on the validation split: the baseline), trains
``configs/mmdet/kat_t_maskrcnn_demo.py`` through mmengine's Runner (progress log with ETA every ``--log-interval``
iterations), evaluates again, draws ground truth | predictions (boxes + masks) for a few validation images into one
PNG and ends with one line::

    demo: coco/bbox_mAP=... coco/segm_mAP=... untrained_bbox_mAP=... time=...s png=...

The flow the three demos share (config, schedule, untrained baseline, training) is :mod:`kat_backbones.apps.demo`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "configs" / "mmdet" / "kat_t_maskrcnn_demo.py"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="data/det_demo", help="data directory; the set goes to DATA/coco_demo")
    parser.add_argument("--work-dir", default="work_dirs/demo", help="logs, checkpoint and the PNG")
    parser.add_argument("--config", default=str(CONFIG), help="detection config (default: the KAT-T demo config)")
    parser.add_argument("--iters", type=int, default=None, help="training iterations (default: the config's)")
    parser.add_argument("--num-train", type=int, default=256, help="training images to generate (default: 256)")
    parser.add_argument("--num-val", type=int, default=16, help="validation images to generate (default: 16)")
    parser.add_argument("--max-objects", type=int, default=3, help="at most this many shapes per image (default: 3)")
    parser.add_argument("--log-interval", type=int, default=10, help="log every N iterations (default: 10)")
    parser.add_argument("--num-images", type=int, default=4, help="validation images in the PNG (default: 4)")
    parser.add_argument("--top-k", type=int, default=3, help="draw the k best predictions per image (default: 3)")
    parser.add_argument("--score-thr", type=float, default=0.05, help="... with at least this score (default: 0.05)")
    parser.add_argument("--seed", type=int, default=0, help="data and training seed (default: 0)")
    parser.add_argument(
        "--threads",
        type=int,
        default=-1,
        help="intra-op threads (default -1 = auto: all cores when the machine is idle, else 1; on 2 cores a step took "
        "0.63 s with 2 threads idle, 0.93 s with 1, and under load 1 thread is much faster than 2 spin-waiting "
        "OpenMP threads; 0 = torch's default)",
    )
    return parser.parse_args(argv)


# The demo set: shapes of 0.12-0.28 x the image side (38-90 px at 160), one hue per class (as in the classification
# demo set). See kat_backbones.apps.demo_data.coco. Before LN2d returned contiguous maps (mmcv's RoIAlign misread them;
# docs/detection.md), the RoI heads learned nothing on it and bbox mAP stayed at 0.11-0.15.
DEMO_RADIUS = (0.12, 0.28)
DEMO_CLASS_HUES = True


def ensure_data(data_dir: Path, size: int, num_train: int, num_val: int, max_objects: int, seed: int) -> Path:
    """The demo set under ``data_dir/coco_demo``, (re)written unless it exists with these settings."""
    from kat_backbones.apps.demo_data.coco import COCO_SUBDIR, make_coco_demo

    data_root = data_dir / COCO_SUBDIR
    settings = dict(num_train=num_train, num_val=num_val, size=size, seed=seed, max_objects=max_objects,
                    radius=list(DEMO_RADIUS), class_hues=DEMO_CLASS_HUES)
    stamp = data_root / "demo_settings.json"
    if stamp.is_file() and json.loads(stamp.read_text()) == settings:
        return data_root
    print(f"demo: writing the demo set to {data_root} ({settings})", flush=True)
    make_coco_demo(data_dir, **settings)
    stamp.write_text(json.dumps(settings))
    return data_root


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")  # the demo is a CPU job: no GPU before torch is imported
    start = time.perf_counter()

    import torch

    from kat_backbones.apps import demo
    from kat_backbones.apps.demo_data.coco import COCO_SUBDIR

    threads = args.threads if args.threads >= 0 else demo.auto_threads()
    data_root = Path(args.data) / COCO_SUBDIR
    cfg = demo.load_config(args.config, args.work_dir, str(data_root) + "/", threads)
    size = int(cfg.image_size[0])
    ensure_data(Path(args.data), size, args.num_train, args.num_val, args.max_objects, args.seed)
    for evaluator in ("val_evaluator", "test_evaluator"):
        cfg[evaluator].ann_file = str(data_root / "annotations" / "instances_val2017.json")
    cfg.randomness = dict(seed=args.seed)
    cfg.default_hooks.logger.interval = args.log_interval
    if args.iters is not None:
        demo.shorten_schedule(cfg, args.iters)

    keys = ("coco/bbox_mAP", "coco/segm_mAP")
    runner, untrained = demo.evaluate_untrained(cfg, "demo", keys, digits=3, init_weights=True)
    print(f"demo: training {cfg.train_cfg.max_iters} iterations (batch {cfg.train_dataloader.batch_size}, "
          f"{size}x{size}, {torch.get_num_threads()} thread(s))", flush=True)
    metrics = demo.train(runner, keys)  # ends with the config's validation (val_interval = max_iters)
    png = Path(args.work_dir) / "predictions.png"
    drawn = demo.draw_det_predictions(runner, args.num_images, args.top_k, args.score_thr, png)
    print(f"demo: {drawn} validation images (left: ground truth, right: the {args.top_k} best predictions per image "
          f"with score >= {args.score_thr}) -> {png}", flush=True)
    elapsed = time.perf_counter() - start
    print(
        f"demo: coco/bbox_mAP={metrics['coco/bbox_mAP']:.3f} coco/segm_mAP={metrics['coco/segm_mAP']:.3f} "
        f"untrained_bbox_mAP={untrained['coco/bbox_mAP']:.3f} time={elapsed:.0f}s png={png}",
        flush=True,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
