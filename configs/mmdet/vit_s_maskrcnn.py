# ViT-S baseline for kat_s_maskrcnn.py: the same ViTDet Mask R-CNN with plain MLPs (Linear-GELU-Linear)
# instead of GR-KAN, initialised from DeiT-S (timm ViT layout; the KAT paper's ViT baseline).
_base_ = './kat_s_maskrcnn.py'
model = dict(
    backbone=dict(
        mlp_type='mlp', init_cfg=dict(type='Pretrained', checkpoint='timm:deit_small_patch16_224.fb_in1k')))
