# KAT-T (embed 192, 3 heads, GR-KAN MLPs) ViTDet Mask R-CNN, COCO, LSJ 1024, 100 epochs, batch 64 (16 GPUs x 4).
# Drop path 0.1 as for B (ViTDet publishes only the ViT-B value; the project's choice for T/S).
_base_ = './_base_/kat_maskrcnn_lsj_1024.py'
embed_dim = 192
model = dict(
    backbone=dict(
        arch='tiny', drop_path_rate=0.1,
        init_cfg=dict(type='Pretrained', checkpoint='timm:kat_tiny_patch16_224.in1k')),
    neck=dict(backbone_channel=embed_dim, in_channels=[embed_dim // 4, embed_dim // 2, embed_dim, embed_dim]))
