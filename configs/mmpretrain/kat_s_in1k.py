# KAT-S/16 (22.05 M params, 4.35 GFLOPs), ImageNet-1k from scratch via mmpretrain: the official KAT recipe (81.2 top-1).
_base_ = './_base_/kat_in1k.py'
model = dict(model_name='kat_small_swish_patch16_224', drop_path_rate=0.1)
