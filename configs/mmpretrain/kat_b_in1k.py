# KAT-B/16 (86.57 M params, 17.06 GFLOPs) ImageNet-1k from scratch via mmpretrain: the official KAT recipe (82.3 top-1).
_base_ = './_base_/kat_in1k.py'
model = dict(model_name='kat_base_swish_patch16_224', drop_path_rate=0.4)
