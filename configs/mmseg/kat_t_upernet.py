# KAT-T (tiny: embed 192, 3 heads, GR-KAN MLPs) + UperNet, ADE20K 512x512, 160k iterations, batch 16 (8 GPUs x 2).
_base_ = './_base_/upernet_kat_ade20k-512x512.py'
model = dict(
    backbone=dict(arch='tiny', init_cfg=dict(checkpoint='timm:kat_tiny_patch16_224.in1k')),
    neck=dict(embed_dim=192),
    decode_head=dict(in_channels=[192, 192, 192, 192]),
    auxiliary_head=dict(in_channels=192))
