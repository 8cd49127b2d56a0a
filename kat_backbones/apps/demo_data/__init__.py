"""Small deterministic synthetic data sets in the standard layouts of the real benchmarks (numpy + PIL only).

- :mod:`kat_backbones.apps.demo_data.coco`: instance segmentation in the COCO layout (``make_coco_demo``).
- :mod:`kat_backbones.apps.demo_data.ade`: semantic segmentation in the ADE20K layout (``make_ade_demo``).

``python tools/make_demo_data.py --out data --task all`` writes both. The submodules are imported on use.
"""

__all__ = ["coco", "ade"]
