# Ablation, classification (KAT-T/16): 1 rational group per GR-KAN activation (baseline: 8).
# Demo scale; full scale: _base_ = '../../imagenet/kat_t_in1k.py'.
_base_ = '../../imagenet/kat_t_demo.py'
model = dict(num_groups=1)
