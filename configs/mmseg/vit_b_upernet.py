# ViT-B baseline for kat_b_upernet.py: the same backbone with plain MLPs (Linear-GELU-Linear) instead of GR-KAN.
_base_ = './kat_b_upernet.py'
# Initialised from DeiT-B (timm deit_base_patch16_224.fb_in1k), the ImageNet baseline KAT is compared with.
model = dict(backbone=dict(mlp_type='mlp', init_cfg=dict(checkpoint='timm:deit_base_patch16_224.fb_in1k')))
