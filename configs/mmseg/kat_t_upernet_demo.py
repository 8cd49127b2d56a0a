# CPU-friendly demo: KAT-T + a slim UperNet on the synthetic ADE20K-layout set, 128x128 crops, 5 classes.
#
#   python tools/make_demo_data.py --task ade --out data        # -> data/ade/ADEChallengeData2016 (see docs)
#   python tools/train.py configs/mmseg/kat_t_upernet_demo.py
#
# Same pipeline/dataset class as the full recipe (ADE20KDataset, reduce_zero_label); the dataset is restricted to the
# five ADE classes the demo images contain (kat_backbones.apps.demo_data.ade.DEMO_CLASSES), so mmseg remaps the ADE ids
# 1..5 to 0..4 and IoUMetric reports those five. Plain OptimWrapper (no AMP), BN instead of SyncBN, from scratch.
# Model: KAT-T over the MAE-style base (Feature2Pyramid neck, out blocks 3/5/7/11) with the windowed backbone the demo
# numbers (README, docs/segmentation.md) were measured with: window 8, global blocks 2/5/8/11, relative positions.
_base_ = './_base_/upernet_kat_ade20k-512x512.py'

data_root = 'data/ade/ADEChallengeData2016'
classes = ('wall', 'building', 'sky', 'floor', 'tree')
num_classes = len(classes)
crop_size = (128, 128)
norm_cfg = dict(type='BN', requires_grad=True)

model = dict(
    data_preprocessor=dict(size=crop_size),
    backbone=dict(
        arch='tiny', img_size=crop_size, window_size=8, global_blocks=(2, 5, 8, 11), use_rel_pos=True,
        drop_path_rate=0.0, init_cfg=None),  # from scratch; 8x8 grid
    neck=dict(embed_dim=192, norm_cfg=norm_cfg),
    decode_head=dict(in_channels=[192] * 4, channels=64, num_classes=num_classes, norm_cfg=norm_cfg),
    auxiliary_head=dict(in_channels=192, channels=32, num_classes=num_classes, norm_cfg=norm_cfg),
    test_cfg=dict(_delete_=True, mode='whole'))

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(type='RandomResize', scale=(256, 128), ratio_range=(0.75, 1.5), keep_ratio=True),
    dict(type='RandomCrop', crop_size=crop_size, cat_max_ratio=0.75),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PhotoMetricDistortion'),
    dict(type='PackSegInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(256, 128), keep_ratio=True),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(type='PackSegInputs'),
]
train_dataloader = dict(
    batch_size=4,
    num_workers=2,
    persistent_workers=True,
    dataset=dict(data_root=data_root, metainfo=dict(classes=classes), pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=1,
    num_workers=2,
    persistent_workers=True,
    dataset=dict(data_root=data_root, metainfo=dict(classes=classes), pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(type='IoUMetric', iou_metrics=['mIoU'])
test_evaluator = val_evaluator

max_iters = 400
optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=1e-3, betas=(0.9, 0.999), weight_decay=0.05),
    constructor='kat_backbones.LayerDecayOptimizerConstructor',
    paramwise_cfg=dict(num_layers=12, layer_decay_rate=0.65))
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-3, by_epoch=False, begin=0, end=40),
    dict(type='PolyLR', eta_min=0.0, power=1.0, begin=40, end=max_iters, by_epoch=False),
]
train_cfg = dict(type='IterBasedTrainLoop', max_iters=max_iters, val_interval=200)
default_hooks = dict(
    logger=dict(type='LoggerHook', interval=10, log_metric_by_epoch=False),
    checkpoint=dict(type='CheckpointHook', by_epoch=False, interval=200, max_keep_ckpts=1))
env_cfg = dict(cudnn_benchmark=False, dist_cfg=dict(backend='gloo'))
auto_scale_lr = dict(enable=False, base_batch_size=4)
