# KAT-T/16 (5.72 M params, 1.13 GFLOPs) on ImageNet-1k from scratch, the reference recipe (paper: 74.6 top-1).
_base_ = './_base_/kat_in1k.py'
model = dict(model_name='kat_tiny_swish_patch16_224', drop_path_rate=0.1)
