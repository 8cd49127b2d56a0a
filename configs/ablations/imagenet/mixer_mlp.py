# Ablation, classification (KAT-T/16): channel mixer = plain MLP (Linear-GELU-Linear, the ViT baseline) instead of
# GR-KAN.
# Demo scale; full scale: _base_ = '../../imagenet/kat_t_in1k.py'.
_base_ = '../../imagenet/kat_t_demo.py'
# (the base's model dict has KAN-only arguments, e.g. kan_init: replaced as a whole; `_base_.x` reads the base)
model = dict(
    _delete_=True,
    type='kat_backbones.TimmClassifier',
    model_name='vit_tiny_patch16_224',  # timm's ViT-Ti: KAT-T with Mlp instead of KAN
    num_classes=_base_.num_classes,
    img_size=_base_.img_size,
    drop_path_rate=_base_.model.drop_path_rate,
    mixup=_base_.model.mixup,
    label_smoothing=_base_.model.label_smoothing)
