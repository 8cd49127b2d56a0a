# Ablation, segmentation (KAT-T UperNet): channel mixer = plain MLP (Linear-GELU-Linear, the ViT baseline) instead of
# GR-KAN.
# Demo scale; full scale: _base_ = '../../mmseg/kat_t_upernet.py'.
_base_ = '../../mmseg/kat_t_upernet_demo.py'
model = dict(backbone=dict(mlp_type='mlp'))
