# Ablation, detection (KAT-T Mask R-CNN): fc1/fc2 init of the reference code, trunc_normal(std=0.02) (baseline:
# variance-preserving).
# Demo scale; full scale: _base_ = '../../mmdet/kat_t_maskrcnn.py'.
_base_ = '../../mmdet/kat_t_maskrcnn_demo.py'
model = dict(backbone=dict(kan_cfg=dict(kan_init='reference')))
