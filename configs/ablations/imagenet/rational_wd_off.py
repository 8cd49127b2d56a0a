# Ablation, classification (KAT-T/16): weight decay on the rational coefficients switched relative to the base
# (det/seg base: off -> on; classification base (reference recipe): on -> off).
# Demo scale; full scale: _base_ = '../../imagenet/kat_t_in1k.py'.
_base_ = '../../imagenet/kat_t_demo.py'
# the base decays the (2-D) rational coefficients, as the reference recipe does; this run does not
optim_wrapper = dict(paramwise_cfg=dict(custom_keys={
    '.weight_numerator': dict(decay_mult=0.0), '.weight_denominator': dict(decay_mult=0.0)}))
