# ViT-S baseline for kat_s_upernet.py: the same backbone with plain MLPs (Linear-GELU-Linear) instead of GR-KAN.
_base_ = './kat_s_upernet.py'
model = dict(backbone=dict(mlp_type='mlp'))
