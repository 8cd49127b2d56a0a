# Ablation, detection (KAT-T Mask R-CNN): act2 initialised as GELU (baseline: swish).
# Demo scale; full scale: _base_ = '../../mmdet/kat_t_maskrcnn.py'.
_base_ = '../../mmdet/kat_t_maskrcnn_demo.py'
model = dict(backbone=dict(kan_cfg=dict(act_init='gelu')))
