# Ablation, segmentation (KAT-T UperNet): act2 initialised as the identity (baseline: swish).
# Demo scale; full scale: _base_ = '../../mmseg/kat_t_upernet.py'.
_base_ = '../../mmseg/kat_t_upernet_demo.py'
model = dict(backbone=dict(kan_cfg=dict(act_init='identity')))
