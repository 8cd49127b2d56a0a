"""A tiny synthetic semantic-segmentation set in the ADE20K (ADEChallengeData2016) layout.

``make_ade_demo('data')`` writes::

    data/ade/ADEChallengeData2016/
        images/training/ADE_train_00000001.jpg ...      RGB, JPEG (as ADE20K)
        images/validation/ADE_val_00000001.jpg ...
        annotations/training/ADE_train_00000001.png ...  single channel (mode ``L``), same stem as the image
        annotations/validation/ADE_val_00000001.png ...

which is exactly the path and layout mmseg's ``ADE20KDataset`` (and ``mmseg::_base_/datasets/ade20k.py``) expects,
so every ADE20K config runs on it by pointing ``data_root`` there.

Label semantics are ADE20K's: a pixel value ``k`` in ``1..150`` is ADE class ``k - 1`` (``wall`` = 1, ``building``
= 2, ...) and ``0`` is "other / unlabelled", which ``reduce_zero_label=True`` (ADE20KDataset's default) turns into
the ignore index 255. The demo images use the first five ADE classes (:data:`DEMO_CLASSES`) plus a few unlabelled
patches:

======  =============  ==================================================================
value   ADE class      what is drawn
======  =============  ==================================================================
0       (unlabelled)   small patches of colour noise; ignored after ``reduce_zero_label``
1       wall           the background: grey-ish diagonal stripes with noise
2       building       axis-aligned rectangles with a brick pattern, reddish
3       sky            ellipses with a smooth blue gradient
4       floor          triangles with a sand-coloured checkerboard
5       tree           blobs (unions of discs) of speckled green
======  =============  ==================================================================

A config trained on the demo set with all 150 ADE classes works unchanged; a demo config can instead restrict the
dataset to ``metainfo=dict(classes=DEMO_CLASSES)``: mmseg then builds a label map (ADE ids 0..4 -> 0..4, every
other class -> 255) and ``IoUMetric`` reports the five classes only.

Everything is deterministic for a given ``seed`` (numpy ``default_rng`` + PIL), with no other dependency.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

import numpy as np
from PIL import Image

from kat_backbones.apps.demo_data import to_uint8

__all__ = ["DEMO_CLASSES", "ADE_SUBDIR", "make_ade_demo", "render_sample"]

#: The ADE20K classes (in ADE order, label values 1..5 in the PNGs) the demo images contain.
DEMO_CLASSES: tuple[str, ...] = ("wall", "building", "sky", "floor", "tree")

#: Location of the dataset root below the data directory (mmseg's default ``data_root`` for ADE20K).
ADE_SUBDIR = Path("ade") / "ADEChallengeData2016"

_SPLITS = (("training", "ADE_train"), ("validation", "ADE_val"))


def _wall(rng: np.random.Generator, yy: np.ndarray, xx: np.ndarray) -> np.ndarray:
    """Background texture: grey-ish diagonal stripes at a random angle/period plus noise."""
    base = rng.uniform(110, 170) + rng.uniform(-15, 15, size=3)
    theta = rng.uniform(0, np.pi)
    period = rng.uniform(6, 14)
    stripes = np.sin(2 * np.pi * (xx * np.cos(theta) + yy * np.sin(theta)) / period)
    img = base[None, None, :] + 25 * stripes[..., None] + rng.normal(0, 8, size=(*yy.shape, 3))
    return img


def _building(rng: np.random.Generator, yy: np.ndarray, xx: np.ndarray) -> np.ndarray:
    """Reddish bricks: rows offset by half a brick, dark mortar lines."""
    base = np.array([170, 80, 60]) + rng.uniform(-20, 20, size=3)
    bh, bw = rng.integers(4, 7), rng.integers(8, 13)
    row = (yy // bh).astype(np.int64)
    mortar = ((yy % bh) == 0) | (((xx + (row % 2) * (bw // 2)) % bw) == 0)
    img = base[None, None, :] + rng.normal(0, 6, size=(*yy.shape, 3))
    img[mortar] *= 0.45
    return img


def _sky(rng: np.random.Generator, yy: np.ndarray, xx: np.ndarray) -> np.ndarray:
    """Smooth vertical blue gradient, almost noise-free."""
    top = np.array([60, 130, 230]) + rng.uniform(-15, 15, size=3)
    bottom = np.array([170, 215, 250]) + rng.uniform(-10, 5, size=3)
    t = (yy / max(yy.max(), 1))[..., None]
    return top * (1 - t) + bottom * t + rng.normal(0, 2, size=(*yy.shape, 3))


def _floor(rng: np.random.Generator, yy: np.ndarray, xx: np.ndarray) -> np.ndarray:
    """Sand-coloured checkerboard."""
    light = np.array([215, 185, 110]) + rng.uniform(-15, 15, size=3)
    dark = light * rng.uniform(0.35, 0.5)
    cell = rng.integers(4, 8)
    check = (((yy // cell) + (xx // cell)) % 2).astype(bool)
    img = np.where(check[..., None], light, dark)
    return img + rng.normal(0, 5, size=(*yy.shape, 3))


def _tree(rng: np.random.Generator, yy: np.ndarray, xx: np.ndarray) -> np.ndarray:
    """Speckled green foliage."""
    base = np.array([50, 140, 45]) + rng.uniform(-15, 15, size=3)
    speckle = rng.random(yy.shape) < 0.25
    img = base[None, None, :] + rng.normal(0, 12, size=(*yy.shape, 3))
    img[speckle] *= 0.55
    return img


def _rect_mask(rng: np.random.Generator, yy: np.ndarray, xx: np.ndarray) -> np.ndarray:
    h, w = yy.shape
    rh, rw = rng.uniform(0.2, 0.5) * h, rng.uniform(0.15, 0.4) * w
    y0, x0 = rng.uniform(0, h - rh), rng.uniform(0, w - rw)
    return (yy >= y0) & (yy < y0 + rh) & (xx >= x0) & (xx < x0 + rw)


def _ellipse_mask(rng: np.random.Generator, yy: np.ndarray, xx: np.ndarray) -> np.ndarray:
    h, w = yy.shape
    ay, ax = rng.uniform(0.1, 0.22) * h, rng.uniform(0.15, 0.3) * w
    cy, cx = rng.uniform(ay, h - ay), rng.uniform(ax, w - ax)
    return ((yy - cy) / ay) ** 2 + ((xx - cx) / ax) ** 2 <= 1.0


def _triangle_mask(rng: np.random.Generator, yy: np.ndarray, xx: np.ndarray) -> np.ndarray:
    h, w = yy.shape
    size = rng.uniform(0.4, 0.65) * min(h, w)
    cy, cx = rng.uniform(size / 2, h - size / 2), rng.uniform(size / 2, w - size / 2)
    rot = rng.uniform(0, 2 * np.pi)
    angles = rot + np.array([0.0, 2 * np.pi / 3, 4 * np.pi / 3])
    vy, vx = cy + size / 2 * np.sin(angles), cx + size / 2 * np.cos(angles)
    signs = []
    for i in range(3):  # same side of all three edges
        j = (i + 1) % 3
        signs.append((xx - vx[i]) * (vy[j] - vy[i]) - (yy - vy[i]) * (vx[j] - vx[i]))
    signs = np.stack(signs)
    return np.all(signs >= 0, axis=0) | np.all(signs <= 0, axis=0)


def _blob_mask(rng: np.random.Generator, yy: np.ndarray, xx: np.ndarray) -> np.ndarray:
    h, w = yy.shape
    r = rng.uniform(0.06, 0.1) * min(h, w)
    cy, cx = rng.uniform(2 * r, h - 2 * r), rng.uniform(2 * r, w - 2 * r)
    mask = np.zeros(yy.shape, dtype=bool)
    for _ in range(rng.integers(3, 6)):
        oy, ox = rng.normal(0, r * 0.8, size=2)
        mask |= (yy - cy - oy) ** 2 + (xx - cx - ox) ** 2 <= (r * rng.uniform(0.7, 1.2)) ** 2
    return mask


# label value -> (texture, shape); label 1 (wall) is the background and has no shape.
_TexFn = Callable[[np.random.Generator, np.ndarray, np.ndarray], np.ndarray]
_FOREGROUND: dict[int, tuple[_TexFn, _TexFn]] = {
    2: (_building, _rect_mask),
    3: (_sky, _ellipse_mask),
    4: (_floor, _triangle_mask),
    5: (_tree, _blob_mask),
}


def render_sample(rng: np.random.Generator, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Draw one image (H, W, 3) uint8 RGB and its ADE-style label map (H, W) uint8 with values 0..5.

    Every image has the wall background, 2 to 5 foreground shapes of distinct classes (a fifth shape repeats a
    class) painted in random order so that they may occlude each other, and 0 to 2 small unlabelled noise patches.
    """
    h, w = size
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    img = _wall(rng, yy, xx)
    label = np.ones((h, w), dtype=np.uint8)
    num_shapes = int(rng.integers(2, 6))
    # a random permutation first so that small sets still see every class, then random extra shapes
    classes = list(rng.permutation(list(_FOREGROUND)))
    classes = (classes + list(rng.choice(list(_FOREGROUND), size=max(0, num_shapes - len(classes)))))[:num_shapes]
    for cls in classes:
        texture, shape = _FOREGROUND[int(cls)]
        mask = shape(rng, yy, xx)
        img[mask] = texture(rng, yy, xx)[mask]
        label[mask] = cls
    for _ in range(int(rng.integers(0, 3))):  # unlabelled clutter -> ignore index after reduce_zero_label
        ph, pw = int(rng.integers(3, max(4, h // 10))), int(rng.integers(3, max(4, w // 10)))
        y0, x0 = int(rng.integers(0, h - ph)), int(rng.integers(0, w - pw))
        img[y0 : y0 + ph, x0 : x0 + pw] = rng.uniform(0, 255, size=(ph, pw, 3))
        label[y0 : y0 + ph, x0 : x0 + pw] = 0
    return to_uint8(img), label


def make_ade_demo(
    root: str | Path,
    num_train: int = 32,
    num_val: int = 8,
    size: int | Sequence[int] = 128,
    seed: int = 0,
) -> Path:
    """Write the synthetic ADE20K-style set below ``root`` and return the dataset root.

    Args:
        root (str | Path): Data directory; the set goes to ``root/ade/ADEChallengeData2016`` (mmseg's default
            ``data_root`` when ``root`` is ``data``). Existing demo files are overwritten.
        num_train (int): Number of training images. Defaults to 32.
        num_val (int): Number of validation images. Defaults to 8.
        size (int | Sequence[int]): Image size, ``s`` for ``s x s`` or ``(h, w)``. Defaults to 128.
        seed (int): Seed; the output is identical for identical arguments. Defaults to 0.

    Returns:
        Path: ``root/ade/ADEChallengeData2016``.
    """
    hw = (int(size), int(size)) if isinstance(size, (int, np.integer)) else (int(size[0]), int(size[1]))
    if min(hw) < 32:
        raise ValueError(f"size must be at least 32 pixels, got {hw}")
    data_root = Path(root) / ADE_SUBDIR
    for split_idx, ((split, prefix), count) in enumerate(zip(_SPLITS, (num_train, num_val))):
        img_dir, ann_dir = data_root / "images" / split, data_root / "annotations" / split
        img_dir.mkdir(parents=True, exist_ok=True)
        ann_dir.mkdir(parents=True, exist_ok=True)
        # one independent stream per split: changing num_train doesn't change the validation images
        rng = np.random.default_rng([seed, split_idx])
        for i in range(1, count + 1):
            img, label = render_sample(rng, hw)
            stem = f"{prefix}_{i:08d}"
            Image.fromarray(img, mode="RGB").save(img_dir / f"{stem}.jpg", quality=95)
            Image.fromarray(label, mode="L").save(ann_dir / f"{stem}.png")
    return data_root
