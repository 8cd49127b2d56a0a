# Ablation, segmentation (KAT-T UperNet): 1 rational group per GR-KAN activation (baseline: 8).
# Demo scale; full scale: _base_ = '../../mmseg/kat_t_upernet.py'.
_base_ = '../../mmseg/kat_t_upernet_demo.py'
model = dict(backbone=dict(kan_cfg=dict(num_groups=1)))
