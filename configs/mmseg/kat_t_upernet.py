# KAT-T (tiny: embed 192, 3 heads, GR-KAN MLPs) + UperNet, ADE20K 512x512, 80k iterations, batch 16 (8 GPUs x 2):
# mmseg's DeiT-S recipe at T width (mmseg publishes no T config).
_base_ = './_base_/upernet_kat-deit_ade20k-512x512.py'
model = dict(
    backbone=dict(arch='tiny', init_cfg=dict(checkpoint='timm:kat_tiny_patch16_224.in1k')),
    decode_head=dict(in_channels=[192, 192, 192, 192]),
    auxiliary_head=dict(in_channels=192))
