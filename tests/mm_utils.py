"""Helpers and fixtures for the OpenMMLab detection tests: tiny synthetic COCO data and config shrinking.

Test modules import the fixtures they use (``from tests.mm_utils import coco_demo_fixture``); pytest knows them by
their ``name`` (``coco_demo``, ``single_thread``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from kat_backbones.apps.demo_data.coco import DEMO_CLASSES, make_coco_demo

REPO = Path(__file__).resolve().parents[1]
DET_CONFIG_DIR = REPO / "configs" / "mmdet"


@pytest.fixture(name="single_thread")
def single_thread_fixture():
    """One intra-op thread for the duration of a test.

    The conv heads of Mask R-CNN are many small ops; with two OpenMP threads on a shared two-core machine the threads
    spin-wait for each other and a training step is several times slower than with one.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session", name="coco_demo")
def coco_demo_fixture(tmp_path_factory) -> Path:
    """A tiny synthetic COCO-layout set (4 train / 2 val images, 96 px); returns its data root."""
    return make_coco_demo(tmp_path_factory.mktemp("data"), num_train=4, num_val=2, size=96, seed=0)


def _resize_pipeline(pipeline: list[dict], size: tuple[int, int]) -> None:
    for t in pipeline:
        kind = t["type"]
        if kind in ("Resize", "RandomResize"):
            t["scale"] = size
        elif kind == "RandomCrop":
            t["crop_size"] = size
        elif kind == "Pad" and "size" in t:
            t["size"] = size


def shrink_det_cfg(
    cfg: Any,
    data_root: Path | None = None,
    size: int = 128,
    max_iters: int | None = None,
    batch_size: int = 1,
    num_rois: int = 32,
    num_proposals: int = 100,
    head_channels: int | None = None,
) -> Any:
    """Scale a Mask R-CNN config down to a CPU test, in place: image size, RoI/proposal counts, loaders, no init.

    Args:
        cfg (mmengine.Config): The config.
        data_root (Path, optional): A :func:`make_coco_demo` root; the data sets and CocoMetric point there and use
            its 3 classes. Defaults to None (data settings untouched).
        size (int): Square training/test size. Defaults to 128.
        max_iters (int, optional): Training iterations (validation once at the end). Defaults to None (unchanged).
        batch_size (int): Training batch. Defaults to 1.
        num_rois (int): RoIs sampled per image for the RoI heads. Defaults to 32.
        num_proposals (int): RPN proposals kept per image (train and test). Defaults to 100.
        head_channels (int, optional): Width of the neck, RPN and RoI heads (256 in the recipe); the conv heads
            dominate a CPU step at test sizes. Defaults to None (unchanged).

    Returns:
        mmengine.Config: ``cfg``.
    """
    hw = (size, size)
    model = cfg.model
    model.backbone.img_size = hw
    model.backbone.window_size = min(model.backbone.get("window_size", 14), size // 16)  # window <= token grid
    model.backbone.init_cfg = None
    for aug in model.data_preprocessor.get("batch_augments") or []:
        aug["size"] = hw
    model.train_cfg.rpn_proposal.update(nms_pre=num_proposals * 2, max_per_img=num_proposals)
    model.train_cfg.rcnn.sampler.num = num_rois
    model.test_cfg.rpn.update(nms_pre=num_proposals * 2, max_per_img=num_proposals)
    model.test_cfg.rcnn.update(score_thr=0.0, max_per_img=10)  # always some predictions to evaluate
    if head_channels is not None:
        c = head_channels
        model.neck.out_channels = c
        model.rpn_head.update(in_channels=c, feat_channels=c)
        roi = model.roi_head
        roi.bbox_roi_extractor.out_channels = roi.mask_roi_extractor.out_channels = c
        roi.bbox_head.update(in_channels=c, conv_out_channels=c, fc_out_channels=4 * c)
        roi.mask_head.update(in_channels=c, conv_out_channels=c)
    for loader_name in ("train_dataloader", "val_dataloader", "test_dataloader"):
        loader = cfg[loader_name]
        loader.update(num_workers=0, persistent_workers=False)
        _resize_pipeline(loader.dataset.pipeline, hw)
        if data_root is not None:
            loader.dataset.data_root = str(data_root)
            loader.dataset.metainfo = dict(classes=DEMO_CLASSES)
    cfg.train_dataloader.batch_size = batch_size
    if data_root is not None:
        for ev_name in ("val_evaluator", "test_evaluator"):
            cfg[ev_name].ann_file = str(Path(data_root) / "annotations" / "instances_val2017.json")
    if max_iters is not None:
        cfg.train_cfg = dict(type="IterBasedTrainLoop", max_iters=max_iters, val_interval=max_iters)
        cfg.param_scheduler = [dict(type="LinearLR", start_factor=0.1, by_epoch=False, begin=0, end=max_iters)]
        cfg.default_hooks.checkpoint = dict(type="CheckpointHook", by_epoch=False, interval=max_iters, save_last=True)
        cfg.default_hooks.logger = dict(type="LoggerHook", interval=5)
    return cfg
