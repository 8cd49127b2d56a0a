# Ablation, segmentation (KAT-T UperNet): Fourier-KArAt attention, universal (one operator per head shared by all
# blocks), G=3, r=12.
# Demo scale; full scale: _base_ = '../../mmseg/kat_t_upernet.py'.
_base_ = '../../mmseg/kat_t_upernet_demo.py'
model = dict(backbone=dict(attn_type='fourier_karat', attn_cfg=dict(grid=3, rank=12, mode='universal')))
