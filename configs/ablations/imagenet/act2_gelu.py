# Ablation, classification (KAT-T/16): act2 initialised as GELU (baseline: swish).
# Demo scale; full scale: _base_ = '../../imagenet/kat_t_in1k.py'.
_base_ = '../../imagenet/kat_t_demo.py'
model = dict(act_init='gelu')
