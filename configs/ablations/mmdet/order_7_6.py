# Ablation, detection (KAT-T Mask R-CNN): rational order (m, n) = (7, 6) (baseline: (5, 4)).
# Demo scale; full scale: _base_ = '../../mmdet/kat_t_maskrcnn.py'.
_base_ = '../../mmdet/kat_t_maskrcnn_demo.py'
model = dict(backbone=dict(kan_cfg=dict(rational_order=(7, 6))))
