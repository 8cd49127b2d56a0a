# Ablation, detection (KAT-T Mask R-CNN): initialised from ViT weights (the paper's KAT*: ViT weights copied, act2
# gelu-initialised).
# Demo scale; full scale: _base_ = '../../mmdet/kat_t_maskrcnn.py'.
_base_ = '../../mmdet/kat_t_maskrcnn_demo.py'
# ViT -> KAT transfer (KAT*): pretrain/demo_kat_tiny_gelu_from_vit.pth is a timm ViT-Ti checkpoint converted by
# tools/convert_checkpoint.py (see docs/ablations.md); compare with act2_gelu.py (same model from scratch).
model = dict(
    backbone=dict(
        kan_cfg=dict(act_init='gelu'),
        init_cfg=dict(_delete_=True, type='Pretrained', checkpoint='pretrain/demo_kat_tiny_gelu_from_vit.pth')))
