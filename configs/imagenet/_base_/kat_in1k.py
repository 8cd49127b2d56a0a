# KAT ImageNet-1k recipe (the KAT paper's, i.e. its reference implementation's timm recipe) through mmengine's Runner:
# 300 epochs, global batch 1024 (8 GPUs x 128), AdamW lr 1e-3 wd 0.05, 5 linear warm-up epochs from lr 1e-5 then
# cosine to 1e-5, RandAugment rand-m9-mstd0.5-inc1, mixup 0.8 / cutmix 1.0, label smoothing 0.1, random erasing
# 0.25, AMP, EMA 0.9999, bicubic, eval crop_pct 0.875. Data: data/imagenet/{train,val}/<class>/*.JPEG
# through mmpretrain's CustomDataset (classes = sorted folder names) and timm's transforms (kat_backbones.TimmTransform)
#
#   python tools/train.py configs/imagenet/kat_t_in1k.py                      (one process; CPU: AMP off, see below)
#   tools/dist_train.sh configs/imagenet/kat_t_in1k.py 8                      (8 GPUs x 128 = the reference batch)
#   tools/dist_train.sh configs/imagenet/kat_t_in1k.py 4 --auto-scale-lr      (other totals: lr x total / 1024)
#
# Choices the published recipe leaves open (stated here): cosine floor eta_min 1e-5 (DeiT's min-lr), schedules stepped
# per iteration, random erasing in timm train.py's default 'pixel' mode, weight decay as timm's optimizer factory (no
# decay on 1-D tensors: biases and norms, nor on pos_embed / cls_token; the 2-D rational coefficients ARE decayed, as in
# the reference), KAN init 'variance_preserving' (the paper's S3; kan_init='reference' is the trunc_normal(0.02) init
# the released checkpoints were trained with). EMA: mmengine's momentum is the weight of the NEW value, so timm's decay
# 0.9999 is momentum 1e-4; validation and the best checkpoint use the EMA weights.
default_scope = 'kat_backbones'
custom_imports = dict(imports=['kat_backbones'], allow_failed_imports=False)

data_root = 'data/imagenet/'
img_size = 224
num_classes = 1000

model = dict(
    type='kat_backbones.TimmClassifier',
    model_name='kat_tiny_swish_patch16_224',
    pretrained=False,
    checkpoint=None,
    num_classes=num_classes,
    img_size=img_size,
    drop_path_rate=0.1,
    kan_init='variance_preserving',
    mixup=dict(mixup_alpha=0.8, cutmix_alpha=1.0, prob=1.0, switch_prob=0.5, mode='batch', label_smoothing=0.1),
    label_smoothing=0.1)

train_pipeline = [
    dict(type='kat_backbones.TimmTransform', input_size=img_size, is_training=True,
         auto_augment='rand-m9-mstd0.5-inc1', interpolation='bicubic', re_prob=0.25, re_mode='pixel', re_count=1),
]
test_pipeline = [
    dict(type='kat_backbones.TimmTransform', input_size=img_size, interpolation='bicubic', crop_pct=0.875),
]
train_dataloader = dict(
    batch_size=128,  # per GPU; 8 GPUs = the reference global batch 1024
    num_workers=10,
    persistent_workers=True,
    pin_memory=True,
    drop_last=True,  # mixup/cutmix pair images within a batch: even, full batches
    sampler=dict(type='DefaultSampler', shuffle=True),
    dataset=dict(
        type='mmpretrain.CustomDataset',
        data_root=data_root,
        data_prefix=dict(img_path='train'),
        pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=128,
    num_workers=10,
    persistent_workers=True,
    pin_memory=True,
    drop_last=False,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(
        type='mmpretrain.CustomDataset',
        data_root=data_root,
        data_prefix=dict(img_path='val'),
        test_mode=True,
        pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(type='mmpretrain.Accuracy', topk=(1, 5))  # in percent: accuracy/top1, accuracy/top5
test_evaluator = val_evaluator

max_epochs = 300
warmup_epochs = 5
base_lr = 1e-3
min_lr = 1e-5
optim_wrapper = dict(
    type='AmpOptimWrapper',  # tools/train.py turns it into OptimWrapper on CPU
    loss_scale='dynamic',
    optimizer=dict(type='AdamW', lr=base_lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.05),
    paramwise_cfg=dict(
        flat_decay_mult=0.0,
        custom_keys={'.pos_embed': dict(decay_mult=0.0), '.cls_token': dict(decay_mult=0.0)}))
param_scheduler = [
    dict(type='LinearLR', start_factor=min_lr / base_lr, end_factor=1.0, by_epoch=True, begin=0,
         end=warmup_epochs, convert_to_iter_based=True),
    dict(type='CosineAnnealingLR', T_max=max_epochs - warmup_epochs, eta_min=min_lr, by_epoch=True,
         begin=warmup_epochs, end=max_epochs, convert_to_iter_based=True),
]
train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=max_epochs, val_interval=1)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
# total batch of the reference lr; `tools/train.py --auto-scale-lr` scales lr by (GPUs x batch_size) / 1024
auto_scale_lr = dict(enable=False, base_batch_size=1024)

custom_hooks = [
    dict(type='EMAHook', ema_type='ExponentialMovingAverage', momentum=1e-4, update_buffers=True, priority=49),
]
default_hooks = dict(
    timer=dict(type='IterTimerHook'),
    logger=dict(type='LoggerHook', interval=100),
    param_scheduler=dict(type='ParamSchedulerHook'),
    checkpoint=dict(type='CheckpointHook', interval=1, max_keep_ckpts=3, save_best='accuracy/top1', rule='greater'),
    sampler_seed=dict(type='DistSamplerSeedHook'),
)
env_cfg = dict(
    cudnn_benchmark=True,
    mp_cfg=dict(mp_start_method='fork', opencv_num_threads=0),
    dist_cfg=dict(backend='nccl'))
vis_backends = [dict(type='LocalVisBackend')]
visualizer = dict(type='Visualizer', vis_backends=vis_backends)
log_processor = dict(window_size=100, by_epoch=True)
log_level = 'INFO'
load_from = None
resume = False
randomness = dict(seed=0, deterministic=False)
