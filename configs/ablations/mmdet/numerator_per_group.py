# Ablation, detection (KAT-T Mask R-CNN): one numerator per group, (G, m+1), instead of one shared (1, m+1).
# Demo scale; full scale: _base_ = '../../mmdet/kat_t_maskrcnn.py'.
_base_ = '../../mmdet/kat_t_maskrcnn_demo.py'
model = dict(backbone=dict(kan_cfg=dict(shared_numerator=False)))
