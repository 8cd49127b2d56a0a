# KAT-T/16 (5.72 M params, 1.13 GFLOPs), ImageNet-1k from scratch via mmpretrain: the official KAT recipe (74.6 top-1).
_base_ = './_base_/kat_in1k.py'
model = dict(model_name='kat_tiny_swish_patch16_224', drop_path_rate=0.1)
