# Ablation, classification (KAT-T/16): Fourier-KArAt attention, blockwise (own operator per head per block), G=3,
# r=12.
# Demo scale; full scale: _base_ = '../../imagenet/kat_t_in1k.py'.
_base_ = '../../imagenet/kat_t_demo.py'
model = dict(attn_type='fourier_karat', attn_cfg=dict(grid=3, rank=12, mode='blockwise'))
