#!/usr/bin/env python
"""Draw the predictions of a detection, segmentation or classification config + checkpoint on images (PNG files).

    python tools/visualize.py configs/mmdet/kat_t_maskrcnn.py work_dirs/kat_t/iter_184375.pth demo/*.jpg --out-dir vis
    python tools/visualize.py configs/mmseg/kat_t_upernet.py work_dirs/seg/iter_160000.pth img.jpg --out-dir vis
    python tools/visualize.py configs/imagenet/kat_t_in1k.py work_dirs/cls/best.pth images/ --out-dir vis --topk 5

The task follows the config: a ``kat_backbones.TimmClassifier`` model is classification, ``default_scope='mmseg'``
segmentation, otherwise (``'mmdet'``) detection.

- detection: ``mmdet.apis.init_detector`` / ``inference_detector``, drawn by mmdet's ``DetLocalVisualizer`` (boxes,
  masks, class names and scores above ``--score-thr``) on the original image;
- segmentation: ``mmseg.apis.init_model`` / ``inference_model``, drawn by mmseg's ``SegLocalVisualizer`` (class
  colours blended at ``--alpha``, class names) on the original image;
- classification: the config's test pipeline and the TimmClassifier's ``predict``; the top-k classes (``--topk``,
  default 5) with their softmax scores are written on the image (small images are first enlarged to a short side of
  320 pixels so the text stays readable).

Class names come from the checkpoint's ``meta.dataset_meta`` (saved by mmengine's Runner), else from the config's
test dataset ``metainfo``. Checkpoints are read with ``torch.load(weights_only=True)``; the mmengine/numpy objects of
Runner checkpoints are allow-listed (``kat_backbones.mm.checkpoint``), ``weights_only=False`` is never used.

IMAGES are files or folders (their images, sorted); each prediction goes to ``OUT_DIR/<image name>.png``.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import torch
from mmengine.config import Config, DictAction

import kat_backbones  # noqa: F401  (registers the kat_backbones scope and the KAT models)
from kat_backbones.checkpoint import read_checkpoint, unwrap_state_dict
from kat_backbones.convert import load_kat_weights
from kat_backbones.mm.checkpoint import install_safe_checkpoint_loading
from kat_backbones.mm.fault_tolerance import inner_dataset_cfg

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm")
CLS_MIN_SIDE = 320
"""Classification pictures are enlarged (integer factor) until their short side is at least this many pixels."""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config", help="config file (configs/mmdet, configs/mmseg or configs/imagenet)")
    parser.add_argument("checkpoint", help="checkpoint file (mmengine Runner checkpoint or state dict)")
    parser.add_argument("images", nargs="+", help="image files or folders")
    parser.add_argument("--out-dir", required=True, help="folder for the PNG files")
    parser.add_argument("--score-thr", type=float, default=0.3, help="detection: minimum score drawn (default: 0.3)")
    parser.add_argument("--alpha", type=float, default=0.5, help="segmentation: mask opacity (default: 0.5)")
    parser.add_argument("--topk", type=int, default=5, help="classification: classes listed (default: 5)")
    parser.add_argument("--device", default=None, help="device (default: cuda:0 when available, else cpu)")
    parser.add_argument("--cfg-options", nargs="+", action=DictAction, help="override config settings, key=value")
    return parser.parse_args(argv)


def task_of(cfg: Config) -> str:
    """``'cls'``, ``'seg'`` or ``'det'`` for a config."""
    if str(cfg.model.get("type", "")).endswith("TimmClassifier"):
        return "cls"
    return "seg" if cfg.get("default_scope") == "mmseg" else "det"


def list_images(inputs: list[str]) -> list[Path]:
    """Image files of the inputs (folders: their images with a known extension, sorted)."""
    images = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            images += sorted(f for f in p.rglob("*") if f.suffix.lower() in IMAGE_EXTENSIONS)
        elif p.is_file():
            images.append(p)
        else:
            raise SystemExit(f"visualize: no such image or folder: {item}")
    if not images:
        raise SystemExit(f"visualize: no images in {inputs}")
    return images


def output_paths(images: list[Path], out_dir: str) -> list[Path]:
    """``OUT_DIR/<stem>.png``; equal stems get a counter."""
    seen: dict[str, int] = {}
    out = []
    for image in images:
        n = seen.get(image.stem, 0)
        seen[image.stem] = n + 1
        out.append(Path(out_dir) / (f"{image.stem}.png" if n == 0 else f"{image.stem}_{n}.png"))
    return out


def _random_palette(n: int, seed: int = 0) -> list[tuple[int, int, int]]:
    rng = np.random.default_rng(seed)
    return [tuple(int(v) for v in rng.integers(40, 256, size=3)) for _ in range(n)]


def _cfg_palette(cfg: Config, num_classes: int) -> list | None:
    """The palette of the config's test dataset (built with ``lazy_init``: no data read), if it has one that fits."""
    from mmengine.registry import DATASETS

    dataset_cfg = dict(inner_dataset_cfg(cfg.test_dataloader.dataset), lazy_init=True)
    try:
        palette = DATASETS.build(dataset_cfg).metainfo.get("palette")
    except (OSError, KeyError, ValueError, TypeError, AssertionError):  # a dataset that needs its files
        return None
    return list(palette) if palette and len(palette) == num_classes else None


def _visualizer_name(task: str) -> str:
    # mmengine visualizers are named singletons: a fresh name per call keeps repeated calls independent
    return f"kat_visualize_{task}_{uuid.uuid4().hex[:8]}"


def visualize_det(cfg: Config, checkpoint: str, images: list[Path], outs: list[Path], device: str,
                  score_thr: float) -> None:
    """Mask R-CNN (or any mmdet detector) predictions drawn by ``DetLocalVisualizer``."""
    import mmcv
    from mmdet.apis import inference_detector, init_detector
    from mmdet.visualization import DetLocalVisualizer

    if "init_cfg" in cfg.model.get("backbone", {}):
        cfg.model.backbone.init_cfg = None  # no ImageNet weights needed: the checkpoint has them all
    model = init_detector(cfg, checkpoint, device=device)
    meta = dict(model.dataset_meta)
    if not meta.get("palette"):
        meta["palette"] = _random_palette(len(meta["classes"]))
    visualizer = DetLocalVisualizer(name=_visualizer_name("det"))
    visualizer.dataset_meta = meta
    for image, out in zip(images, outs):
        result = inference_detector(model, str(image))
        rgb = mmcv.imread(str(image), channel_order="rgb")
        visualizer.add_datasample(image.name, rgb, data_sample=result, draw_gt=False, show=False,
                                  pred_score_thr=score_thr, out_file=str(out))
        kept = int((result.pred_instances.scores >= score_thr).sum())
        print(f"visualize: {image} -> {out} ({kept} detections >= {score_thr})")


def visualize_seg(cfg: Config, checkpoint: str, images: list[Path], outs: list[Path], device: str,
                  alpha: float) -> None:
    """Semantic segmentation predictions drawn by ``SegLocalVisualizer``."""
    import mmcv
    from mmseg.apis import inference_model, init_model
    from mmseg.visualization import SegLocalVisualizer

    model = init_model(cfg, checkpoint, device=device)
    classes = list(model.dataset_meta["classes"])
    palette = model.dataset_meta.get("palette")
    if not palette or len(palette) != len(classes):
        palette = _cfg_palette(cfg, len(classes)) or _random_palette(len(classes))
    visualizer = SegLocalVisualizer(name=_visualizer_name("seg"), alpha=alpha)
    visualizer.set_dataset_meta(classes=classes, palette=[list(c) for c in palette])
    for image, out in zip(images, outs):
        result = inference_model(model, str(image))
        rgb = mmcv.imread(str(image), channel_order="rgb")
        visualizer.add_datasample(image.name, rgb, data_sample=result, draw_gt=False, show=False, out_file=str(out),
                                  with_labels=True)
        found = [classes[i] for i in result.pred_sem_seg.data.unique().tolist() if 0 <= i < len(classes)]
        print(f"visualize: {image} -> {out} (classes: {', '.join(found)})")


def _cls_classes(cfg: Config, checkpoint: dict, num_classes: int) -> list[str]:
    meta = checkpoint.get("meta") if isinstance(checkpoint.get("meta"), dict) else {}
    classes = (meta.get("dataset_meta") or {}).get("classes")
    if not classes:
        dataset = cfg.get("test_dataloader", {}).get("dataset", {})
        classes = (dataset.get("metainfo") or {}).get("classes")
    classes = list(classes or [])
    if len(classes) != num_classes:
        classes = [f"class {i}" for i in range(num_classes)]
    return classes


def draw_topk(image, labels: list[str], scores: list[float]):
    """The image (PIL, RGB) enlarged to a short side >= :data:`CLS_MIN_SIDE`, with the ranked classes and their
    scores (percent, with a bar) in a box at the top left."""
    from PIL import Image, ImageDraw, ImageFont

    scale = max(1, math.ceil(CLS_MIN_SIDE / min(image.size)))
    canvas = image.convert("RGB").resize((image.width * scale, image.height * scale), Image.Resampling.BICUBIC)
    side = min(canvas.size)
    font = ImageFont.load_default(size=max(11, side // 22))
    line_h = int(font.size * 1.45)
    pad = max(4, side // 60)
    lines = [f"{i + 1}. {label}  {100 * score:.1f}%" for i, (label, score) in enumerate(zip(labels, scores))]
    draw = ImageDraw.Draw(canvas, "RGBA")
    text_w = max(draw.textlength(line, font=font) for line in lines)
    box_w = min(canvas.width - pad, int(text_w) + 2 * pad)
    box_h = len(lines) * line_h + 2 * pad
    draw.rectangle((pad // 2, pad // 2, pad // 2 + box_w, pad // 2 + box_h), fill=(0, 0, 0, 150))
    for i, (line, score) in enumerate(zip(lines, scores)):
        y = pad // 2 + pad + i * line_h
        bar = int((box_w - 2 * pad) * score)
        draw.rectangle((pad // 2 + pad, y + line_h - 4, pad // 2 + pad + bar, y + line_h - 2),
                       fill=(255, 200, 0, 230) if i == 0 else (160, 200, 255, 200))
        draw.text((pad // 2 + pad, y), line, font=font, fill=(255, 255, 255, 255) if i else (255, 220, 0, 255))
    return canvas


def visualize_cls(cfg: Config, checkpoint: str, images: list[Path], outs: list[Path], device: str,
                  topk: int) -> None:
    """Top-k classes of a TimmClassifier config, written on the images."""
    from mmengine.dataset import Compose
    from mmengine.registry import MODELS, init_default_scope
    from PIL import Image

    init_default_scope(cfg.get("default_scope", "kat_backbones"))
    cfg.model.pretrained = False
    cfg.model.checkpoint = None  # the weights come from CHECKPOINT
    model = MODELS.build(cfg.model)
    ckpt = read_checkpoint(checkpoint)
    state = unwrap_state_dict(ckpt)  # a TimmClassifier run's 'model.' prefix is stripped there
    load_kat_weights(model.model, state, strict=True)
    model.to(device).eval()
    classes = _cls_classes(cfg, ckpt, model.num_classes)
    pipeline = Compose(inner_dataset_cfg(cfg.test_dataloader.dataset).pipeline)
    k = min(topk, model.num_classes)
    for image, out in zip(images, outs):
        sample = pipeline(dict(img_path=str(image), gt_label=-1))
        with torch.no_grad():
            scores = model.predict(sample["inputs"][None].to(device))[0]["pred_score"].float().cpu()
        top = scores.topk(k)
        labels = [classes[i] for i in top.indices.tolist()]
        canvas = draw_topk(Image.open(image), labels, top.values.tolist())
        out.parent.mkdir(parents=True, exist_ok=True)
        canvas.save(out, format="PNG")
        print(f"visualize: {image} -> {out} (top-1 {labels[0]} {100 * top.values[0].item():.1f}%)")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    install_safe_checkpoint_loading()  # mmengine's load_checkpoint: weights_only=True + the mmengine allow-list
    cfg = Config.fromfile(args.config)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    device = args.device or ("cuda:0" if torch.cuda.is_available() else "cpu")
    images = list_images(args.images)
    outs = output_paths(images, args.out_dir)
    os.makedirs(args.out_dir, exist_ok=True)
    task = task_of(cfg)
    run: dict[str, Any] = {
        "det": lambda: visualize_det(cfg, args.checkpoint, images, outs, device, args.score_thr),
        "seg": lambda: visualize_seg(cfg, args.checkpoint, images, outs, device, args.alpha),
        "cls": lambda: visualize_cls(cfg, args.checkpoint, images, outs, device, args.topk),
    }
    run[task]()
    return 0


if __name__ == "__main__":
    sys.exit(main())
