# Ablation, segmentation (KAT-T UperNet): fc1/fc2 init of the reference code, trunc_normal(std=0.02) (baseline:
# variance-preserving).
# Demo scale; full scale: _base_ = '../../mmseg/kat_t_upernet.py'.
_base_ = '../../mmseg/kat_t_upernet_demo.py'
model = dict(backbone=dict(kan_cfg=dict(kan_init='reference')))
