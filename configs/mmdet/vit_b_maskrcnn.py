# ViT-B baseline for kat_b_maskrcnn.py: the same ViTDet Mask R-CNN with plain MLPs (Linear-GELU-Linear)
# instead of GR-KAN, initialised from DeiT-B (timm ViT layout; the KAT paper's ViT baseline).
_base_ = './kat_b_maskrcnn.py'
model = dict(
    backbone=dict(
        mlp_type='mlp', init_cfg=dict(type='Pretrained', checkpoint='timm:deit_base_patch16_224.fb_in1k')))
