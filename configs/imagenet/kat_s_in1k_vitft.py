# KAT-S* (paper: 82.0 top-1): KAT-S/16 initialised from a timm ViT-S/DeiT checkpoint, then the same recipe.
# The checkpoint is converted on load by kat_backbones.convert (every ViT weight copied, fc1/fc2 unchanged; the
# rationals keep their init: act1 identity, act2 gelu, so the start approximates the GELU ViT). Any timm
# ViT/DeiT state dict (.pth/.safetensors) of this size works, e.g. from timm's deit_small_patch16_224 or
# vit_small_patch16_224 weights; see docs/classification.md.
_base_ = './kat_s_in1k.py'
model = dict(model_name='kat_small_gelu_patch16_224', checkpoint='timm:deit_small_patch16_224.fb_in1k')
