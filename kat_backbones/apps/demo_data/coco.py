"""A tiny synthetic instance-segmentation set in the COCO layout.

``make_coco_demo('data')`` writes::

    data/coco_demo/
        annotations/instances_train2017.json
        annotations/instances_val2017.json
        train2017/000000000001.jpg ...
        val2017/000000000001.jpg ...

i.e. the layout of ``data/coco/`` that mmdet's ``CocoDataset`` (and ``mmdet::_base_/datasets/coco_instance.py``)
expects, so any COCO config runs on it by pointing ``data_root`` at it and restricting the classes with
``metainfo=dict(classes=DEMO_CLASSES)``.

Each image has a textured background (random sinusoidal stripes, a colour gradient and noise) and 1 to
``max_objects`` non-overlapping coloured shapes of three categories: ``circle`` (id 1), ``rectangle`` (id 2, rotated)
and ``triangle`` (id 3). A shape is drawn from the same polygon that is stored as its segmentation, so boxes, masks and
pixels agree exactly (circles are 32-gons). Shapes never overlap, so no instance is occluded.

Everything is deterministic for a given ``seed`` (numpy ``default_rng`` + PIL), with no other dependency.
"""

from __future__ import annotations

import colorsys
import json
import math
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from PIL import Image, ImageDraw

from kat_backbones.apps.demo_data import to_uint8

__all__ = ["DEMO_CLASSES", "COCO_SUBDIR", "make_coco_demo", "render_sample"]

#: Category names; COCO ids are 1, 2, 3 in this order.
DEMO_CLASSES: tuple[str, ...] = ("circle", "rectangle", "triangle")

#: Location of the dataset root below the data directory.
COCO_SUBDIR = Path("coco_demo")

_SPLITS = ("train2017", "val2017")
_CIRCLE_VERTICES = 32


def _background(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Stripes + gradient + noise, muted colours (float HxWx3)."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    base = rng.uniform(60, 190, size=3)
    img = np.broadcast_to(base, (h, w, 3)).astype(np.float32).copy()
    for _ in range(2):
        angle = rng.uniform(0, math.pi)
        period = rng.uniform(6, 24)
        phase = (xx * math.cos(angle) + yy * math.sin(angle)) * (2 * math.pi / period)
        img += np.sin(phase)[..., None] * rng.uniform(5, 20, size=3)
    gy, gx = rng.uniform(-40, 40, size=(2, 3))
    img += (yy / max(h - 1, 1))[..., None] * gy + (xx / max(w - 1, 1))[..., None] * gx
    img += rng.normal(0, 6, size=(h, w, 3))
    return img


def _shape_polygon(rng: np.random.Generator, kind: int, cx: float, cy: float, r: float) -> np.ndarray:
    """Vertices (K, 2) of a shape inscribed in the circle (cx, cy, r)."""
    if kind == 0:  # circle
        t = np.linspace(0, 2 * math.pi, _CIRCLE_VERTICES, endpoint=False)
        return np.stack([cx + r * np.cos(t), cy + r * np.sin(t)], axis=1)
    rot = rng.uniform(0, 2 * math.pi)
    if kind == 1:  # rotated rectangle with aspect ratio in [0.4, 1]
        half_diag_angle = math.atan(rng.uniform(0.4, 1.0))
        t = np.array([half_diag_angle, math.pi - half_diag_angle, math.pi + half_diag_angle, -half_diag_angle]) + rot
    else:  # triangle: three well-separated angles
        t = rot + np.array([0.0, 2 * math.pi / 3, 4 * math.pi / 3]) + rng.uniform(-0.35, 0.35, size=3)
    return np.stack([cx + r * np.cos(t), cy + r * np.sin(t)], axis=1)


def _polygon_area(poly: np.ndarray) -> float:
    x, y = poly[:, 0], poly[:, 1]
    return float(0.5 * abs(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))))


def render_sample(
    rng: np.random.Generator,
    size: tuple[int, int],
    max_objects: int = 4,
    radius: tuple[float, float] = (0.08, 0.22),
    class_hues: bool = False,
) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """Render one image and its instances.

    Args:
        rng (np.random.Generator): Random stream.
        size (tuple[int, int]): (height, width).
        max_objects (int): At most this many shapes (at least 1). Defaults to 4.
        radius (tuple[float, float]): Range of a shape's circumradius as a fraction of the image's shorter side.
            Defaults to (0.08, 0.22).
        class_hues (bool): Give each class its own hue (jittered; circle red, rectangle green, triangle blue) instead
            of a random saturated colour, so a class is recognisable by shape and by colour. Defaults to False.

    Returns:
        tuple[np.ndarray, list[dict]]: The uint8 RGB image and one dict per instance with ``category_id`` (1-based),
        ``polygon`` ((K, 2) float array, pixel coordinates), ``bbox`` (``[x, y, w, h]``) and ``area``.
    """
    h, w = size
    img = _background(rng, h, w)
    side = min(h, w)
    placed: list[tuple[float, float, float]] = []
    instances: list[dict[str, Any]] = []
    for _ in range(int(rng.integers(1, max_objects + 1))):
        for _attempt in range(50):  # rejection sampling: inside the image, no overlap with earlier shapes
            r = float(rng.uniform(*radius) * side)
            cx = float(rng.uniform(r + 2, w - r - 2))
            cy = float(rng.uniform(r + 2, h - r - 2))
            if all(math.hypot(cx - px, cy - py) > r + pr + 3 for px, py, pr in placed):
                break
        else:
            continue
        placed.append((cx, cy, r))
        kind = int(rng.integers(0, len(DEMO_CLASSES)))
        poly = _shape_polygon(rng, kind, cx, cy, r)
        mask_img = Image.new("L", (w, h), 0)
        ImageDraw.Draw(mask_img).polygon([tuple(p) for p in poly.tolist()], fill=255)
        mask = np.asarray(mask_img) > 0
        # a saturated colour (far from the muted background) with a little texture
        if class_hues:
            hue = (kind / len(DEMO_CLASSES) + rng.uniform(-0.05, 0.05)) % 1.0
            colour = 255 * np.array(colorsys.hsv_to_rgb(hue, rng.uniform(0.75, 1.0), rng.uniform(0.8, 1.0)))
        else:
            colour = rng.permutation(np.array([rng.uniform(200, 255), rng.uniform(0, 60), rng.uniform(0, 255)]))
        texture = colour + rng.normal(0, 10, size=(h, w, 3))
        img[mask] = texture[mask]
        x0, y0 = poly.min(axis=0)
        x1, y1 = poly.max(axis=0)
        instances.append(
            dict(
                category_id=kind + 1,
                polygon=poly,
                bbox=[float(x0), float(y0), float(x1 - x0), float(y1 - y0)],
                area=_polygon_area(poly),
            )
        )
    return to_uint8(img), instances


def make_coco_demo(
    root: str | Path,
    num_train: int = 16,
    num_val: int = 4,
    size: int | Sequence[int] = 256,
    seed: int = 0,
    max_objects: int = 4,
    radius: tuple[float, float] = (0.08, 0.22),
    class_hues: bool = False,
) -> Path:
    """Write the synthetic COCO-style set below ``root`` and return the dataset root.

    Args:
        root (str | Path): Data directory; the set goes to ``root/coco_demo``. Existing demo files are overwritten.
        num_train (int): Number of training images. Defaults to 16.
        num_val (int): Number of validation images. Defaults to 4.
        size (int | Sequence[int]): Image size, ``s`` for ``s x s`` or ``(h, w)``. Defaults to 256.
        seed (int): Seed; the output is identical for identical arguments. Defaults to 0.
        max_objects (int): At most this many shapes per image. Defaults to 4.
        radius (tuple[float, float]): Range of the shapes' circumradius as a fraction of the image's shorter side.
            Defaults to (0.08, 0.22).
        class_hues (bool): One hue per class (see :func:`render_sample`). Defaults to False.

    Returns:
        Path: ``root/coco_demo``.
    """
    if not 0 < radius[0] <= radius[1] < 0.5:
        raise ValueError(f"radius must satisfy 0 < low <= high < 0.5 (fractions of the image side), got {radius}")
    hw = (int(size), int(size)) if isinstance(size, (int, np.integer)) else (int(size[0]), int(size[1]))
    if min(hw) < 32:
        raise ValueError(f"size must be at least 32 pixels, got {hw}")
    data_root = Path(root) / COCO_SUBDIR
    (data_root / "annotations").mkdir(parents=True, exist_ok=True)
    categories = [dict(id=i + 1, name=name, supercategory="shape") for i, name in enumerate(DEMO_CLASSES)]
    for split_idx, (split, count) in enumerate(zip(_SPLITS, (num_train, num_val))):
        img_dir = data_root / split
        img_dir.mkdir(parents=True, exist_ok=True)
        # one independent stream per split: changing num_train doesn't change the validation images
        rng = np.random.default_rng([seed, split_idx])
        images, annotations = [], []
        for img_id in range(1, count + 1):
            img, instances = render_sample(rng, hw, max_objects=max_objects, radius=tuple(radius),
                                           class_hues=class_hues)
            file_name = f"{img_id:012d}.jpg"
            Image.fromarray(img, mode="RGB").save(img_dir / file_name, quality=95)
            images.append(dict(id=img_id, file_name=file_name, height=hw[0], width=hw[1]))
            for inst in instances:
                annotations.append(
                    dict(
                        id=len(annotations) + 1,
                        image_id=img_id,
                        category_id=inst["category_id"],
                        segmentation=[np.round(inst["polygon"], 2).reshape(-1).tolist()],
                        area=round(inst["area"], 2),
                        bbox=[round(v, 2) for v in inst["bbox"]],
                        iscrowd=0,
                    )
                )
        ann = dict(
            info=dict(description="kat_backbones synthetic COCO-layout demo set", version="1.0", year=2025),
            licenses=[],
            images=images,
            annotations=annotations,
            categories=categories,
        )
        with open(data_root / "annotations" / f"instances_{split}.json", "w") as f:
            json.dump(ann, f)
    return data_root
