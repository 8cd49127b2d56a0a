# Ablation, classification (KAT-T/16): fc1/fc2 init of the reference code, trunc_normal(std=0.02) (baseline:
# variance-preserving).
# Demo scale; full scale: _base_ = '../../imagenet/kat_t_in1k.py'.
_base_ = '../../imagenet/kat_t_demo.py'
model = dict(kan_init='reference')
