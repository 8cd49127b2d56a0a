# ViT-T baseline for kat_t_maskrcnn.py: the same ViTDet Mask R-CNN with plain MLPs (Linear-GELU-Linear)
# instead of GR-KAN, initialised from DeiT-T (timm ViT layout; the KAT paper's ViT baseline).
_base_ = './kat_t_maskrcnn.py'
model = dict(
    backbone=dict(
        mlp_type='mlp', init_cfg=dict(type='Pretrained', checkpoint='timm:deit_tiny_patch16_224.fb_in1k')))
