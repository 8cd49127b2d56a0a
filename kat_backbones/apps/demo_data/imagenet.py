"""A tiny synthetic classification set in the ImageNet ImageFolder layout.

``make_imagenet_demo('data')`` writes::

    data/imagenet_demo/
        train/disc/disc_00000.JPEG ...          one folder per class, RGB JPEG (extension as ImageNet's)
        train/square/...
        val/disc/val_00000001.JPEG ...
        ...

i.e. the layout of ``data/imagenet/{train,val}/<class>/`` that mmpretrain's ``CustomDataset`` reads (class list =
sorted folder names), so every ImageNet config runs on it by pointing ``data_root`` at it and setting ``num_classes``.

Each class is a shape with its own hue (jittered), drawn at a random position, scale and rotation on a muted,
textured background (stripes, gradient, noise), so a class is recognisable both by shape and by colour and stays
learnable under RandAugment's colour and geometry operations:

=====  ==========  =====================================================
order  class       what is drawn (hue)
=====  ==========  =====================================================
0      disc        filled disc (red)
1      square      filled square, rotated (green)
2      triangle    filled equilateral triangle, rotated (blue)
3      ring        annulus (yellow)
4      cross       plus sign, rotated (magenta)
5      stripes     a square patch of parallel bars, rotated (cyan)
6      checker     a square patch with a 4 x 4 checkerboard (orange)
7      dots        3 x 3 grid of small discs (purple)
=====  ==========  =====================================================

``num_classes`` takes the first classes of this table (2 to 8). Images are assigned to classes round-robin, so every
class gets ``num_train // num_classes`` or one more training images. Everything is deterministic for a given
``seed`` (numpy ``default_rng`` + PIL), with no other dependency.
"""

from __future__ import annotations

import colorsys
import math
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image

from kat_backbones.apps.demo_data import to_uint8

__all__ = ["CLASSES", "HUES", "IMAGENET_DEMO_SUBDIR", "make_imagenet_demo", "render_sample"]

#: All class names, in the order of the table above (the dataset's class indices follow the sorted folder names).
CLASSES: tuple[str, ...] = ("disc", "square", "triangle", "ring", "cross", "stripes", "checker", "dots")

#: Foreground hue (HSV, 0..1) of each class.
HUES: tuple[float, ...] = (0.0, 0.33, 0.62, 0.15, 0.83, 0.5, 0.07, 0.74)

#: Location of the dataset root below the data directory.
IMAGENET_DEMO_SUBDIR = Path("imagenet_demo")

_MaskFn = Callable[[np.random.Generator, np.ndarray, np.ndarray], np.ndarray]


def _background(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Muted grey-ish stripes + gradient + noise (float HxWx3)."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    img = np.full((h, w, 3), rng.uniform(70, 160)) + rng.uniform(-12, 12, size=3)
    angle, period = rng.uniform(0, math.pi), rng.uniform(5, 16)
    img += 12 * np.sin(2 * math.pi * (xx * math.cos(angle) + yy * math.sin(angle)) / period)[..., None]
    img += (yy / max(h - 1, 1))[..., None] * rng.uniform(-30, 30, size=3)
    return img + rng.normal(0, 8, size=(h, w, 3))


def _frame(rng: np.random.Generator, yy: np.ndarray, xx: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """Object-centred, rotated coordinates (u, v) and the object radius (pixels)."""
    h, w = yy.shape
    r = rng.uniform(0.22, 0.38) * min(h, w)
    cy, cx = rng.uniform(r, h - r), rng.uniform(r, w - r)
    t = rng.uniform(0, 2 * math.pi)
    dy, dx = yy - cy, xx - cx
    return dx * math.cos(t) + dy * math.sin(t), -dx * math.sin(t) + dy * math.cos(t), r


def _disc(rng, yy, xx):
    u, v, r = _frame(rng, yy, xx)
    return u**2 + v**2 <= r**2


def _square(rng, yy, xx):
    u, v, r = _frame(rng, yy, xx)
    return np.maximum(np.abs(u), np.abs(v)) <= 0.75 * r


def _triangle(rng, yy, xx):
    u, v, r = _frame(rng, yy, xx)
    inside = np.ones(u.shape, dtype=bool)
    for k in range(3):  # inside the three edges of an equilateral triangle with circumradius r
        a = 2 * math.pi * k / 3
        inside &= u * math.cos(a) + v * math.sin(a) <= 0.5 * r
    return inside


def _ring(rng, yy, xx):
    u, v, r = _frame(rng, yy, xx)
    d2 = u**2 + v**2
    return (d2 <= r**2) & (d2 >= (0.55 * r) ** 2)


def _cross(rng, yy, xx):
    u, v, r = _frame(rng, yy, xx)
    arm, half = 0.28 * r, 0.95 * r
    return ((np.abs(u) <= arm) & (np.abs(v) <= half)) | ((np.abs(v) <= arm) & (np.abs(u) <= half))


def _stripes(rng, yy, xx):
    u, v, r = _frame(rng, yy, xx)
    return (np.maximum(np.abs(u), np.abs(v)) <= 0.8 * r) & (np.mod(u / (0.4 * r), 1.0) < 0.5)


def _checker(rng, yy, xx):
    u, v, r = _frame(rng, yy, xx)
    cell = 0.4 * r
    parity = (np.floor(u / cell) + np.floor(v / cell)) % 2 == 0
    return (np.maximum(np.abs(u), np.abs(v)) <= 0.8 * r) & parity


def _dots(rng, yy, xx):
    u, v, r = _frame(rng, yy, xx)
    mask = np.zeros(u.shape, dtype=bool)
    for gy in (-1, 0, 1):
        for gx in (-1, 0, 1):
            mask |= (u - gx * 0.62 * r) ** 2 + (v - gy * 0.62 * r) ** 2 <= (0.2 * r) ** 2
    return mask


_SHAPES: tuple[_MaskFn, ...] = (_disc, _square, _triangle, _ring, _cross, _stripes, _checker, _dots)


def render_sample(rng: np.random.Generator, label: int, size: tuple[int, int]) -> np.ndarray:
    """Draw one (H, W, 3) uint8 RGB image of class ``label`` (an index into :data:`CLASSES`)."""
    h, w = size
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    img = _background(rng, h, w)
    hue = (HUES[label] + rng.uniform(-0.03, 0.03)) % 1.0
    colour = 255 * np.array(colorsys.hsv_to_rgb(hue, rng.uniform(0.65, 1.0), rng.uniform(0.7, 1.0)))
    mask = _SHAPES[label](rng, yy, xx)
    img[mask] = colour + rng.normal(0, 6, size=(int(mask.sum()), 3))
    return to_uint8(img)


def make_imagenet_demo(
    root: str | Path,
    num_classes: int = 4,
    num_train: int = 256,
    num_val: int = 64,
    size: int = 64,
    seed: int = 0,
) -> Path:
    """Write the synthetic ImageFolder set below ``root`` and return the dataset root.

    Args:
        root (str | Path): Data directory; the set goes to ``root/imagenet_demo``. Existing demo files are
            overwritten (files of classes no longer generated are left alone).
        num_classes (int): Number of classes, the first ones of :data:`CLASSES` (2 to 8). Defaults to 4.
        num_train (int): Number of training images in total (round-robin over the classes). Defaults to 256.
        num_val (int): Number of validation images in total. Defaults to 64.
        size (int): Image side in pixels (square images). Defaults to 64.
        seed (int): Seed; the output is identical for identical arguments. Defaults to 0.

    Returns:
        Path: ``root/imagenet_demo`` with ``train/<class>/*.JPEG`` and ``val/<class>/*.JPEG``.
    """
    if not 2 <= num_classes <= len(CLASSES):
        raise ValueError(f"num_classes must be in [2, {len(CLASSES)}], got {num_classes}")
    if size < 16:
        raise ValueError(f"size must be at least 16 pixels, got {size}")
    data_root = Path(root) / IMAGENET_DEMO_SUBDIR
    for split_idx, (split, count) in enumerate((("train", num_train), ("val", num_val))):
        for name in CLASSES[:num_classes]:
            (data_root / split / name).mkdir(parents=True, exist_ok=True)
        # one independent stream per split: changing num_train doesn't change the validation images
        rng = np.random.default_rng([seed, split_idx])
        for i in range(count):
            label = i % num_classes
            img = render_sample(rng, label, (size, size))
            stem = f"{CLASSES[label]}_{i:05d}" if split == "train" else f"val_{i + 1:08d}"
            Image.fromarray(img, mode="RGB").save(data_root / split / CLASSES[label] / f"{stem}.JPEG", quality=95)
    return data_root
