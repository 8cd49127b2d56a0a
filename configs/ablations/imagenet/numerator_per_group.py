# Ablation, classification (KAT-T/16): one numerator per group, (G, m+1), instead of one shared (1, m+1).
# Demo scale; full scale: _base_ = '../../imagenet/kat_t_in1k.py'.
_base_ = '../../imagenet/kat_t_demo.py'
model = dict(shared_numerator=False)
