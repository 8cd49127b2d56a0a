# Ablation, segmentation (KAT-T UperNet): weight decay on the rational coefficients switched relative to the base
# (det/seg base: off -> on; classification base (reference recipe): on -> off).
# Demo scale; full scale: _base_ = '../../mmseg/kat_t_upernet.py'.
_base_ = '../../mmseg/kat_t_upernet_demo.py'
# LayerDecayOptimizerConstructor: rational_decay_mult=1.0 decays weight_numerator/weight_denominator like
# weights (the base keeps them out of weight decay, rational_decay_mult=0.0)
optim_wrapper = dict(paramwise_cfg=dict(rational_decay_mult=1.0))
