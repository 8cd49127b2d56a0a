# Ablation, segmentation (KAT-T UperNet): one numerator per group, (G, m+1), instead of one shared (1, m+1).
# Demo scale; full scale: _base_ = '../../mmseg/kat_t_upernet.py'.
_base_ = '../../mmseg/kat_t_upernet_demo.py'
model = dict(backbone=dict(kan_cfg=dict(shared_numerator=False)))
