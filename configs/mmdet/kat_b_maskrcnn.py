# KAT-B (embed 768, 12 heads, GR-KAN MLPs) ViTDet Mask R-CNN, COCO, LSJ 1024, 100 epochs, batch 64 (16 GPUs x 4).
# Drop path 0.1 (ViTDet's ViT-B value). Everything else: _base_/kat_maskrcnn_lsj_1024.py.
_base_ = './_base_/kat_maskrcnn_lsj_1024.py'
