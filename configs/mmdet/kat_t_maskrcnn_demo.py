# CPU-friendly demo: KAT-T ViTDet Mask R-CNN on the synthetic COCO-layout set (3 shape classes), 160x160, 500 iters.
#
#   python tools/demo.py                                      # = make demo: data, baseline, training, AP, PNG
#   (by hand: the demo set is make_coco_demo(..., size=160, radius=(0.12, 0.28), class_hues=True), docs/detection.md)
#   python tools/train.py configs/mmdet/kat_t_maskrcnn_demo.py
#
# Same architecture, pipeline and dataset class as the full recipe (kat_t_maskrcnn.py), scaled down: LSJ at 160 with a
# mild jitter (0.75-1.25), neck and heads 128 wide instead of 256, fewer proposals/RoIs, batch 4, AdamW lr 2e-4 with
# 50 warm-up iterations, plain OptimWrapper (no AMP), no pretraining (random init, so no layer-wise lr decay), box +
# mask AP (CocoMetric) on the validation images at the end.
# 2 CPU cores: 0.65-1.0 s/iter with 2 threads (make demo: 8.4 min in all); 1 thread: ~1.3 s/iter.
_base_ = './kat_t_maskrcnn.py'

data_root = 'data/coco_demo/'
classes = ('circle', 'rectangle', 'triangle')
metainfo = dict(classes=classes)
num_classes = len(classes)
image_size = (160, 160)
backend_args = None

head_channels = 128  # neck / RPN / RoI-head width (256 in the recipe): the conv heads dominate a CPU step

model = dict(
    data_preprocessor=dict(batch_augments=[dict(type='BatchFixedSizePad', size=image_size, pad_mask=True)]),
    # window <= the token grid (image_size // 16); the recipe's 14 needs >= 224 px
    backbone=dict(img_size=image_size, window_size=min(14, image_size[0] // 16), drop_path_rate=0.0, init_cfg=None),
    neck=dict(out_channels=head_channels),
    rpn_head=dict(in_channels=head_channels, feat_channels=head_channels),
    roi_head=dict(
        bbox_roi_extractor=dict(out_channels=head_channels),
        bbox_head=dict(in_channels=head_channels, conv_out_channels=head_channels, fc_out_channels=4 * head_channels,
                       num_classes=num_classes),
        mask_roi_extractor=dict(out_channels=head_channels),
        mask_head=dict(in_channels=head_channels, conv_out_channels=head_channels, num_classes=num_classes)),
    train_cfg=dict(
        rpn_proposal=dict(nms_pre=500, max_per_img=100),
        rcnn=dict(sampler=dict(num=64))),
    test_cfg=dict(rpn=dict(nms_pre=300, max_per_img=100), rcnn=dict(max_per_img=20)))

train_pipeline = [
    dict(type='LoadImageFromFile', backend_args=backend_args),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='RandomResize', scale=image_size, ratio_range=(0.75, 1.25), keep_ratio=True),
    dict(type='RandomCrop', crop_type='absolute_range', crop_size=image_size, recompute_bbox=True,
         allow_negative_crop=True),
    dict(type='FilterAnnotations', min_gt_bbox_wh=(1e-2, 1e-2)),
    dict(type='Pad', size=image_size, pad_val=dict(img=(114, 114, 114))),
    dict(type='PackDetInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile', backend_args=backend_args),
    dict(type='Resize', scale=image_size, keep_ratio=True),
    dict(type='Pad', size=image_size, pad_val=dict(img=(114, 114, 114))),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='PackDetInputs', meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor')),
]
train_dataloader = dict(
    batch_size=4,
    num_workers=1,
    persistent_workers=True,
    dataset=dict(data_root=data_root, metainfo=metainfo, pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=4,
    num_workers=1,
    persistent_workers=True,
    dataset=dict(data_root=data_root, metainfo=metainfo, pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(ann_file=data_root + 'annotations/instances_val2017.json', metric=['bbox', 'segm'])
test_evaluator = val_evaluator

max_iters = 500
optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    constructor='kat_backbones.LayerDecayOptimizerConstructor',
    paramwise_cfg=dict(decay_rate=1.0, num_layers=12),
    optimizer=dict(type='AdamW', lr=2e-4, betas=(0.9, 0.999), weight_decay=0.05),
    clip_grad=dict(max_norm=10.0))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=50),
    dict(type='MultiStepLR', begin=0, end=max_iters, by_epoch=False, milestones=[400, 470], gamma=0.1),
]
train_cfg = dict(_delete_=True, type='IterBasedTrainLoop', max_iters=max_iters, val_interval=max_iters)
default_hooks = dict(
    logger=dict(type='LoggerHook', interval=10),
    checkpoint=dict(type='CheckpointHook', by_epoch=False, interval=max_iters, max_keep_ckpts=1))
env_cfg = dict(cudnn_benchmark=False, dist_cfg=dict(backend='gloo'))
auto_scale_lr = dict(enable=False, base_batch_size=4)
