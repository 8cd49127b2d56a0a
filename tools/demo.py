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


def _busy_cores(interval: float = 1.0) -> float | None:
    """Cores kept busy by other processes right now (from two /proc/stat samples), or None where unavailable."""
    import time

    def sample() -> tuple[int, int]:
        with open("/proc/stat") as f:
            fields = [int(v) for v in f.readline().split()[1:]]
        idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
        return sum(fields), idle

    try:
        total0, idle0 = sample()
        time.sleep(interval)
        total1, idle1 = sample()
    except (OSError, ValueError, IndexError):
        return None
    if total1 <= total0:
        return None
    return (os.cpu_count() or 1) * (1.0 - (idle1 - idle0) / (total1 - total0))


def auto_threads() -> int:
    """All cores when the machine is idle now, else 1 (contention makes OpenMP threads spin-wait for each other).

    "Now" is one second of /proc/stat: the 1-minute load average still counts a set-up or build that just finished,
    which made the demo take 1 thread (14 instead of 9 minutes) on an idle machine. Without /proc/stat, the load
    average decides.
    """
    cores = os.cpu_count() or 1
    busy = _busy_cores()
    if busy is None:
        try:
            busy = os.getloadavg()[0]
        except OSError:
            return 1
    return cores if busy < 0.5 * cores else 1


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


def configure(cfg, args: argparse.Namespace, data_root: Path):
    """Point the config at the demo set and the work dir; apply --iters and --log-interval."""
    for loader in ("train_dataloader", "val_dataloader", "test_dataloader"):
        cfg[loader].dataset.data_root = str(data_root) + "/"
    for evaluator in ("val_evaluator", "test_evaluator"):
        cfg[evaluator].ann_file = str(data_root / "annotations" / "instances_val2017.json")
    cfg.work_dir = args.work_dir
    cfg.randomness = dict(seed=args.seed)
    cfg.default_hooks.logger.interval = args.log_interval
    if args.iters is not None:
        old = cfg.train_cfg.max_iters
        cfg.train_cfg.max_iters = cfg.train_cfg.val_interval = args.iters
        cfg.default_hooks.checkpoint.interval = args.iters
        for sched in cfg.param_scheduler:  # rescale the schedule's iteration marks to the new length
            if sched.get("end", 0) == old:
                sched["end"] = args.iters
            if "milestones" in sched:
                sched["milestones"] = [round(m * args.iters / old) for m in sched["milestones"]]
            if sched.get("type") == "LinearLR":
                sched["end"] = min(sched["end"], max(1, args.iters // 5))
    return cfg


def draw_predictions(runner, num_images: int, top_k: int, score_thr: float, out_file: Path) -> int:
    """Run the trained model on the first validation images and tile (ground truth | prediction) pairs in a PNG."""
    import mmcv
    import numpy as np
    import torch
    from mmdet.visualization import DetLocalVisualizer

    meta = dict(runner.val_dataloader.dataset.metainfo)
    meta["palette"] = [(220, 20, 60), (0, 130, 255), (0, 200, 90)][: len(meta["classes"])]
    visualizer = DetLocalVisualizer(name=f"kat_demo_{os.getpid()}_{time.time_ns()}")
    visualizer.dataset_meta = meta
    model = runner.model
    model.eval()
    tiles, drawn = [], 0
    with torch.no_grad():
        for data in runner.val_dataloader:
            for sample in model.test_step(data):
                if drawn >= num_images:
                    break
                rgb = mmcv.imread(sample.img_path, channel_order="rgb")
                rgb = mmcv.imrescale(rgb, 2.0, interpolation="nearest")  # 2x: readable labels on small images
                pred = sample.pred_instances
                sample.pred_instances = pred[pred.scores.argsort(descending=True)[:top_k]]
                sample = _rescale_sample(sample, 2.0)
                visualizer.add_datasample(Path(sample.img_path).name, rgb, data_sample=sample, draw_gt=True,
                                          draw_pred=True, show=False, pred_score_thr=score_thr)
                tiles.append(visualizer.get_image())
                drawn += 1
            if drawn >= num_images:
                break
    cols = 2 if len(tiles) > 1 else 1
    while len(tiles) % cols:
        tiles.append(np.zeros_like(tiles[0]))
    rows = [np.concatenate(tiles[i:i + cols], axis=1) for i in range(0, len(tiles), cols)]
    grid = np.concatenate(rows, axis=0)
    out_file.parent.mkdir(parents=True, exist_ok=True)
    mmcv.imwrite(grid[..., ::-1], str(out_file))
    return drawn


def _rescale_sample(sample, scale: float):
    """Scale a DetDataSample's boxes and masks (ground truth and predictions) by ``scale`` for drawing."""
    import torch
    import torch.nn.functional as F

    for key in ("gt_instances", "pred_instances"):
        if key not in sample:
            continue
        inst = getattr(sample, key)
        if "bboxes" in inst:
            inst.bboxes = inst.bboxes * scale
        if "masks" in inst:
            masks = inst.masks
            if isinstance(masks, torch.Tensor):
                if len(masks):
                    masks = F.interpolate(masks[None].float(), scale_factor=scale, mode="nearest")[0] > 0.5
                else:
                    masks = masks.new_zeros((0, round(masks.shape[1] * scale), round(masks.shape[2] * scale)))
            else:  # BitmapMasks / PolygonMasks
                masks = masks.rescale(scale)
            inst.masks = masks
    return sample


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")  # the demo is a CPU job
    start = time.perf_counter()

    import torch
    from mmengine.config import Config
    from mmengine.runner import Runner

    from kat_backbones.mm import convert_cfg_for_cpu

    threads = args.threads if args.threads >= 0 else auto_threads()
    if threads > 0:
        torch.set_num_threads(threads)
    cfg = Config.fromfile(args.config)
    size = int(cfg.image_size[0])
    data_root = ensure_data(Path(args.data), size, args.num_train, args.num_val, args.max_objects, args.seed)
    configure(cfg, args, data_root)
    convert_cfg_for_cpu(cfg)

    runner = Runner.from_cfg(cfg)
    runner.model.init_weights()  # the config's initialisation, as train() would do, before the baseline evaluation
    print("demo: evaluating the untrained model (baseline)", flush=True)
    untrained = runner.val()
    print(f"demo: untrained coco/bbox_mAP={untrained['coco/bbox_mAP']:.3f} "
          f"coco/segm_mAP={untrained['coco/segm_mAP']:.3f}", flush=True)
    print(f"demo: training {cfg.train_cfg.max_iters} iterations (batch {cfg.train_dataloader.batch_size}, "
          f"{size}x{size}, {torch.get_num_threads()} thread(s))", flush=True)
    runner.train()  # ends with the config's validation (val_interval = max_iters)
    hub = runner.message_hub
    metrics = {k: hub.get_scalar(f"val/{k}").current() for k in ("coco/bbox_mAP", "coco/segm_mAP")}
    png = Path(args.work_dir) / "predictions.png"
    drawn = draw_predictions(runner, args.num_images, args.top_k, args.score_thr, png)
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
