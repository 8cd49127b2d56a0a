# Ablation, detection (KAT-T Mask R-CNN): Fourier-KArAt attention, universal (one operator per head shared by all
# blocks), G=3, r=12.
# Demo scale; full scale: _base_ = '../../mmdet/kat_t_maskrcnn.py'.
_base_ = '../../mmdet/kat_t_maskrcnn_demo.py'
model = dict(backbone=dict(attn_type='fourier_karat', attn_cfg=dict(grid=3, rank=12, mode='universal')))
