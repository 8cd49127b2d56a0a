# ViT-B baseline for kat_b_upernet.py: the same backbone with plain MLPs (Linear-GELU-Linear) instead of GR-KAN.
_base_ = './kat_b_upernet.py'
model = dict(backbone=dict(mlp_type='mlp'))
