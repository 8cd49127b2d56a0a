# Ablation, classification (KAT-T/16): the reference point: GR-KAN, 8 groups, order (5, 4), act2 swish, variance-
# preserving init, shared numerator, softmax attention, from scratch (the demo config unchanged).
# Demo scale; full scale: _base_ = '../../imagenet/kat_t_in1k.py'.
_base_ = '../../imagenet/kat_t_demo.py'
