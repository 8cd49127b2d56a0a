# Ablation of kat_b_maskrcnn.py: the project's former weight-decay rules instead of ViTDet's. No weight decay on any
# norm (backbone, neck and RoI-head LN2d), any bias, pos_embed, rel_pos_h/w and the GR-KAN rational coefficients;
# ViTDet exempts only the backbone's norms and pos_embed. Everything else as kat_b_maskrcnn.py.
_base_ = './kat_b_maskrcnn.py'
optim_wrapper = dict(
    paramwise_cfg=dict(
        norm_decay_scope='all', bias_decay_mult=0.0, rel_pos_decay_mult=0.0, rational_decay_mult=0.0))
