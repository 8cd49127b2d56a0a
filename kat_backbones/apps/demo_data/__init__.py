"""Small deterministic synthetic data sets in the standard layouts of the real benchmarks (numpy + PIL only).

- :mod:`kat_backbones.apps.demo_data.coco`: instance segmentation in the COCO layout (``make_coco_demo``).
- :mod:`kat_backbones.apps.demo_data.ade`: semantic segmentation in the ADE20K layout (``make_ade_demo``).
- :mod:`kat_backbones.apps.demo_data.imagenet`: classification in the ImageFolder layout (``make_imagenet_demo``).

``python tools/make_demo_data.py --out data --task all`` writes all three. The submodules are imported on use.
"""

import numpy as np

__all__ = ["coco", "ade", "imagenet", "to_uint8"]


def to_uint8(x: np.ndarray) -> np.ndarray:
    """A float image clipped to [0, 255] as uint8 (every generator's last step)."""
    return np.clip(x, 0, 255).astype(np.uint8)
