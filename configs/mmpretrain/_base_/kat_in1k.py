# KAT ImageNet-1k recipe through mmpretrain (the official KAT recipe, a timm train.py run, in mmpretrain's terms):
# 300 epochs, global batch 1024 (8 GPUs x 128), AdamW lr 1e-3 wd 0.05, 5 linear warm-up epochs from lr 1e-5 then
# cosine to 1e-5, RandAugment m9 mstd0.5 (timm's increasing policies), mixup 0.8 / cutmix 1.0, label smoothing 0.1,
# random erasing 0.25 (per-pixel random fill), AMP, EMA 0.9999, bicubic, eval resize 256 + center crop 224 (crop_pct
# 0.875). Drop path: kat_{t,s,b}_in1k.py (0.1 / 0.1 / 0.4).
#
# Everything comes from mmpretrain's own bases (the Swin/DeiT ImageNet data pipeline, AdamW schedule and runtime) with
# the KAT values on top. The model is mmpretrain's TimmClassifier around the timm KAT model (`import kat_backbones`
# registers it), so checkpoints are the official architecture; kat_backbones.MMPretrainTimmClassifier only makes its
# checkpoints work with EMA (kat_backbones/mm/mmpretrain_timm.py). The timm-native twin of this recipe (timm transforms
# and Mixup, the project's TimmClassifier) is configs/imagenet/. Data: data/imagenet/{train,val}/<class>/*.JPEG
# (mmpretrain's ImageNet dataset; meta/{train,val}.txt are used when present).
#
#   tools/dist_train.sh configs/mmpretrain/kat_t_in1k.py 8                       (8 GPUs x 128 = batch 1024)
#   python tools/test.py configs/mmpretrain/kat_t_in1k.py CHECKPOINT
_base_ = [
    'mmpretrain::_base_/datasets/imagenet_bs64_swin_224.py',
    'mmpretrain::_base_/schedules/imagenet_bs1024_adamw_swin.py',
    'mmpretrain::_base_/default_runtime.py',
]
custom_imports = dict(imports=['kat_backbones', 'kat_backbones.mm.mmpretrain_timm'], allow_failed_imports=False)

model = dict(
    type='kat_backbones.MMPretrainTimmClassifier',  # mmpretrain's TimmClassifier, EMA-safe checkpoints
    model_name='kat_tiny_swish_patch16_224',
    pretrained=False,
    num_classes=1000,
    drop_path_rate=0.1,
    # label smoothing 0.1 on the (mixed) targets: timm's Mixup(label_smoothing=0.1) + SoftTargetCrossEntropy
    loss=dict(type='LabelSmoothLoss', label_smooth_val=0.1, mode='original'),
    # one of mixup (alpha 0.8) / cutmix (alpha 1.0) per batch, with equal probability: timm's switch_prob 0.5
    train_cfg=dict(augments=[dict(type='Mixup', alpha=0.8), dict(type='CutMix', alpha=1.0)]))

train_dataloader = dict(batch_size=128)  # per GPU; 8 GPUs = the reference batch 1024
val_dataloader = dict(batch_size=128)
test_dataloader = val_dataloader

max_epochs = 300
warmup_epochs = 5
base_lr = 1e-3  # = the base config's 5e-4 * 1024 / 512
min_lr = 1e-5
optim_wrapper = dict(
    type='AmpOptimWrapper',
    loss_scale='dynamic',
    optimizer=dict(type='AdamW', lr=base_lr, weight_decay=0.05, eps=1e-8, betas=(0.9, 0.999)),
    # timm's optimizer factory: no decay on 1-D tensors (norms, biases) nor pos_embed / cls_token; the 2-D rational
    # coefficients are decayed, as in the reference
    paramwise_cfg=dict(
        norm_decay_mult=0.0,
        bias_decay_mult=0.0,
        flat_decay_mult=0.0,
        custom_keys={'.pos_embed': dict(decay_mult=0.0), '.cls_token': dict(decay_mult=0.0)}))
param_scheduler = [
    dict(type='LinearLR', start_factor=min_lr / base_lr, by_epoch=True, begin=0, end=warmup_epochs,
         convert_to_iter_based=True),
    dict(type='CosineAnnealingLR', T_max=max_epochs - warmup_epochs, eta_min=min_lr, by_epoch=True,
         begin=warmup_epochs, end=max_epochs, convert_to_iter_based=True),
]
train_cfg = dict(by_epoch=True, max_epochs=max_epochs, val_interval=1)
auto_scale_lr = dict(base_batch_size=1024)

# EMA 0.9999: mmengine's momentum is the weight of the new value (1 - decay); validation uses the EMA weights
custom_hooks = [dict(type='EMAHook', momentum=1e-4, priority='ABOVE_NORMAL')]
default_hooks = dict(checkpoint=dict(type='CheckpointHook', interval=1, max_keep_ckpts=3, save_best='auto'))
