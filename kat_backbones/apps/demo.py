"""The flow shared by the three CPU demos (``tools/demo.py`` detection, ``tools/demo_cls.py`` classification,
``tools/demo_seg.py`` segmentation): a demo config pointed at the synthetic set, optionally shortened, evaluated
untrained (the baseline), trained through mmengine's Runner and evaluated again.

    cfg = load_config(CONFIG, work_dir, data_root, threads)   # torch threads, work dir, the three dataloaders
    shorten_schedule(cfg, length)                               # --iters / --epochs: loop, schedulers, checkpoints
    runner, untrained = evaluate_untrained(cfg, "demo-seg", ("mIoU",), digits=1)
    metrics = train(runner, ("mIoU", "aAcc"))

Each tool writes its own data set (:mod:`kat_backbones.apps.demo_data`) and prints its own summary line. The demos
are CPU jobs: the tools hide the GPUs (``CUDA_VISIBLE_DEVICES=''``) before importing this module, which imports
torch. Also here: the detection demo's automatic thread count (:func:`auto_threads`) and its picture of ground
truth | predictions (:func:`draw_det_predictions`).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from mmengine.config import Config
from mmengine.runner import Runner

from kat_backbones.mm import convert_cfg_for_cpu

__all__ = [
    "ensure_data",
    "load_config",
    "shorten_schedule",
    "evaluate_untrained",
    "train",
    "busy_cores",
    "auto_threads",
    "draw_det_predictions",
]

DATALOADERS = ("train_dataloader", "val_dataloader", "test_dataloader")


def ensure_data(tag: str, data_root: Path, required: Sequence[str], make: Callable[[], object]) -> Path:
    """``data_root``, written by ``make()`` unless its ``required`` sub-folders all exist (announced: ``TAG: ...``)."""
    if not all((data_root / sub).is_dir() for sub in required):
        print(f"{tag}: writing the demo set to {data_root}", flush=True)
        make()
    return data_root


def load_config(config: str | os.PathLike, work_dir: str, data_root: str, threads: int) -> Config:
    """``config`` with its work dir and the three dataloaders' ``data_root`` set; ``threads > 0`` sets torch's
    intra-op threads (0: torch's default)."""
    if threads > 0:
        torch.set_num_threads(threads)
    cfg = Config.fromfile(str(config))
    cfg.work_dir = work_dir
    for loader in DATALOADERS:
        cfg[loader].dataset.data_root = data_root
    return cfg


def shorten_schedule(cfg: Config, length: int) -> Config:
    """Sets the training length (``max_iters`` of an iteration loop, ``max_epochs`` of an epoch loop) to ``length``,
    validating and saving a checkpoint once at the end, and rescales the schedulers to it.

    A scheduler that ended at the old length ends at ``length``; MultiStepLR milestones scale with the length; a
    LinearLR warm-up in first place lasts at most a fifth of ``length`` (at least 1) and the schedulers that began
    where it ended begin where it ends now; ``T_max`` (cosine) is the scheduler's new span.
    """
    if length < 1:
        raise ValueError(f"length must be >= 1 (iterations or epochs), got {length}")
    key = "max_iters" if "max_iters" in cfg.train_cfg else "max_epochs"
    old = cfg.train_cfg[key]
    cfg.train_cfg[key] = cfg.train_cfg.val_interval = length
    cfg.default_hooks.checkpoint.interval = length
    scheds = cfg.param_scheduler
    warmup_end = scheds[0].get("end") if scheds and scheds[0].get("type") == "LinearLR" else None
    for sched in scheds:
        if sched.get("end", 0) == old:
            sched["end"] = length
        if "milestones" in sched:
            sched["milestones"] = [round(m * length / old) for m in sched["milestones"]]
    if warmup_end is not None:
        scheds[0]["end"] = min(warmup_end, max(1, length // 5))
        for sched in scheds[1:]:
            if sched.get("begin") == warmup_end:
                sched["begin"] = scheds[0]["end"]
    for sched in scheds:
        if "T_max" in sched:
            sched["T_max"] = max(1, sched["end"] - sched.get("begin", 0))
    return cfg


def evaluate_untrained(cfg: Config, tag: str, keys: Sequence[str], digits: int,
                       init_weights: bool = False) -> tuple[Runner, dict[str, float]]:
    """The Runner of ``cfg`` (made CPU-runnable) and the metrics of its untrained model on the validation set (the
    baseline), printed as ``TAG: untrained KEY=VALUE ...``.

    ``init_weights``: apply the config's initialisation first, as ``train()`` would (it is then not repeated); else
    the baseline is the model as built and ``train()`` initialises it afterwards.
    """
    convert_cfg_for_cpu(cfg)
    runner = Runner.from_cfg(cfg)
    if init_weights:
        runner.model.init_weights()
    print(f"{tag}: evaluating the untrained model (baseline)", flush=True)
    untrained = runner.val()
    print(f"{tag}: untrained " + " ".join(f"{k}={untrained[k]:.{digits}f}" for k in keys), flush=True)
    return runner, untrained


def train(runner: Runner, keys: Sequence[str]) -> dict[str, float]:
    """Trains (the demo configs validate at the end) and returns the last validation's ``keys``."""
    runner.train()
    hub = runner.message_hub
    return {k: hub.get_scalar(f"val/{k}").current() for k in keys}


# --------------------------------------------------------------------------------------------------------------------
# threads


def busy_cores(interval: float = 1.0) -> float | None:
    """Cores kept busy by other processes right now (from two /proc/stat samples), or None where unavailable."""

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
    busy = busy_cores()
    if busy is None:
        try:
            busy = os.getloadavg()[0]
        except OSError:
            return 1
    return cores if busy < 0.5 * cores else 1


# --------------------------------------------------------------------------------------------------------------------
# the detection demo's picture


def draw_det_predictions(runner: Runner, num_images: int, top_k: int, score_thr: float, out_file: Path) -> int:
    """Runs the trained detector on the first validation images and tiles (ground truth | prediction) pairs, two
    per row, into a PNG (``mmdet``'s ``DetLocalVisualizer``, images enlarged 2x). Returns the number drawn."""
    import mmcv
    import numpy as np
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
