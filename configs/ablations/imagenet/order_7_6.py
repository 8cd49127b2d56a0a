# Ablation, classification (KAT-T/16): rational order (m, n) = (7, 6) (baseline: (5, 4)).
# Demo scale; full scale: _base_ = '../../imagenet/kat_t_in1k.py'.
_base_ = '../../imagenet/kat_t_demo.py'
model = dict(rational_order=(7, 6))
