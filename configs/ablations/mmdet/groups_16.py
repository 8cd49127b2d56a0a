# Ablation, detection (KAT-T Mask R-CNN): 16 rational groups per GR-KAN activation (baseline: 8).
# Demo scale; full scale: _base_ = '../../mmdet/kat_t_maskrcnn.py'.
_base_ = '../../mmdet/kat_t_maskrcnn_demo.py'
model = dict(backbone=dict(kan_cfg=dict(num_groups=16)))
