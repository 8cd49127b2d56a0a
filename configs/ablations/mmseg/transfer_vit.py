# Ablation, segmentation (KAT-T UperNet): initialised from ViT weights (the paper's KAT*: ViT weights copied, act2
# gelu-initialised).
# Demo scale; full scale: _base_ = '../../mmseg/kat_t_upernet.py'.
_base_ = '../../mmseg/kat_t_upernet_demo.py'
# ViT -> KAT transfer (KAT*): pretrain/demo_kat_tiny_gelu_from_vit.pth is a timm ViT-Ti checkpoint converted by
# tools/convert_checkpoint.py (see docs/ablations.md); compare with act2_gelu.py (same model from scratch).
model = dict(
    backbone=dict(
        kan_cfg=dict(act_init='gelu'),
        init_cfg=dict(_delete_=True, type='Pretrained', checkpoint='pretrain/demo_kat_tiny_gelu_from_vit.pth')))
