# Ablation, segmentation (KAT-T UperNet): rational order (m, n) = (3, 2) (baseline: (5, 4)).
# Demo scale; full scale: _base_ = '../../mmseg/kat_t_upernet.py'.
_base_ = '../../mmseg/kat_t_upernet_demo.py'
model = dict(backbone=dict(kan_cfg=dict(rational_order=(3, 2))))
