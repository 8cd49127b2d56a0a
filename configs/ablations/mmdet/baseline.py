# Ablation, detection (KAT-T Mask R-CNN): the reference point: GR-KAN, 8 groups, order (5, 4), act2 swish, variance-
# preserving init, shared numerator, softmax attention, from scratch (the demo config unchanged).
# Demo scale; full scale: _base_ = '../../mmdet/kat_t_maskrcnn.py'.
_base_ = '../../mmdet/kat_t_maskrcnn_demo.py'
