# KAT-S (small: embed 384, 6 heads, GR-KAN MLPs) + UperNet, ADE20K 512x512, 80k iterations, batch 16 (8 GPUs x 2):
# mmseg's DeiT-S recipe.
_base_ = './_base_/upernet_kat-deit_ade20k-512x512.py'
model = dict(
    backbone=dict(arch='small', init_cfg=dict(checkpoint='timm:kat_small_patch16_224.in1k')),
    decode_head=dict(in_channels=[384, 384, 384, 384]),
    auxiliary_head=dict(in_channels=384))
