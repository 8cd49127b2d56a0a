# KAT-B (base: embed 768, 12 heads, GR-KAN MLPs) + UperNet, ADE20K 512x512, 160k iterations, batch 16 (8 GPUs x 2):
# mmseg's MAE-B recipe (UPerHead 768 wide, layer decay 0.65).
_base_ = './_base_/upernet_kat_ade20k-512x512.py'
model = dict(
    backbone=dict(arch='base', init_cfg=dict(checkpoint='timm:kat_base_patch16_224.in1k')),
    neck=dict(embed_dim=768),
    decode_head=dict(in_channels=[768, 768, 768, 768]),
    auxiliary_head=dict(in_channels=768))
