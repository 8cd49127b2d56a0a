# Ablation, segmentation (KAT-T UperNet): the reference point: GR-KAN, 8 groups, order (5, 4), act2 swish, variance-
# preserving init, shared numerator, softmax attention, from scratch (the demo config unchanged).
# Demo scale; full scale: _base_ = '../../mmseg/kat_t_upernet.py'.
_base_ = '../../mmseg/kat_t_upernet_demo.py'
