# Ablation, detection (KAT-T Mask R-CNN): channel mixer = plain MLP (Linear-GELU-Linear, the ViT baseline) instead of
# GR-KAN.
# Demo scale; full scale: _base_ = '../../mmdet/kat_t_maskrcnn.py'.
_base_ = '../../mmdet/kat_t_maskrcnn_demo.py'
model = dict(backbone=dict(mlp_type='mlp'))
