# Ablation, classification (KAT-T/16): initialised from ViT weights (the paper's KAT*: ViT weights copied, act2 gelu-
# initialised).
# Demo scale; full scale: _base_ = '../../imagenet/kat_t_in1k.py'.
_base_ = '../../imagenet/kat_t_demo.py'
# ViT -> KAT transfer (KAT*): pretrain/demo_kat_tiny_gelu_from_vit.pth is a timm ViT-Ti checkpoint converted by
# tools/convert_checkpoint.py (see docs/ablations.md); compare with act2_gelu.py (same model from scratch).
model = dict(model_name='kat_tiny_gelu_patch16_224', checkpoint='pretrain/demo_kat_tiny_gelu_from_vit.pth')
