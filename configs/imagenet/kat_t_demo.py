# CPU-friendly demo: KAT-T/16 from scratch on the synthetic ImageFolder set (4 classes, 64 px), a few minutes on CPU.
#
#   python tools/make_demo_data.py --task imagenet --out data   # -> data/imagenet_demo/{train,val}/<class>/*.JPEG
#   python tools/train.py configs/imagenet/kat_t_demo.py        # or: make demo-cls (data, training, summary line)
#
# Same model, data classes, transforms, losses and schedule shape as kat_t_in1k.py, scaled down: 64 px (4 x 4
# patches), batch 32, 10 epochs, lr 1e-3 (not scaled down to the batch) with 1 warm-up epoch, milder RandAugment (m5)
# and mixup/cutmix (prob 0.5) so that learning shows within 80 iterations, plain OptimWrapper (fp32) and no EMA
# (0.9999 averages over far more iterations than the demo has).
_base_ = './kat_t_in1k.py'

data_root = 'data/imagenet_demo/'
img_size = 64
num_classes = 4
max_epochs = 10  # 256 images / batch 32 = 8 iterations per epoch: 80 iterations
warmup_epochs = 1
base_lr = 1e-3
min_lr = 1e-5

model = dict(
    num_classes=num_classes,
    img_size=img_size,
    drop_path_rate=0.1,
    mixup=dict(prob=0.5))

train_pipeline = [
    dict(type='kat_backbones.TimmTransform', input_size=img_size, is_training=True,
         auto_augment='rand-m5-mstd0.5-inc1', interpolation='bicubic', re_prob=0.25, re_mode='pixel', re_count=1),
]
test_pipeline = [
    dict(type='kat_backbones.TimmTransform', input_size=img_size, interpolation='bicubic', crop_pct=0.875),
]
train_dataloader = dict(
    batch_size=32,
    num_workers=0,
    persistent_workers=False,
    pin_memory=False,
    dataset=dict(data_root=data_root, pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=32,
    num_workers=0,
    persistent_workers=False,
    pin_memory=False,
    dataset=dict(data_root=data_root, pipeline=test_pipeline))
test_dataloader = val_dataloader
# 4 classes: top-1 and top-2 (mmpretrain's Accuracy refuses a k above the number of classes)
val_evaluator = dict(type='mmpretrain.Accuracy', topk=(1, 2))
test_evaluator = val_evaluator

optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
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
train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=max_epochs, val_interval=max_epochs)
auto_scale_lr = dict(enable=False, base_batch_size=32)

custom_hooks = []
default_hooks = dict(
    logger=dict(type='LoggerHook', interval=10),
    checkpoint=dict(_delete_=True, type='CheckpointHook', interval=max_epochs, max_keep_ckpts=1))
env_cfg = dict(cudnn_benchmark=False, dist_cfg=dict(backend='gloo'))
log_processor = dict(window_size=10, by_epoch=True)
