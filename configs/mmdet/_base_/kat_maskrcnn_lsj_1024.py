# ViTDet Mask R-CNN with a plain KAT backbone on COCO: LSJ 1024, 100 epochs (184,375 iterations at batch 64).
#
# Recipe (ViTDet, Li et al. 2022; mmdet projects/ViTDet): KAT/ViT backbone with window attention (14x14) except the
# global blocks 2/5/8/11 and zero-init decomposed relative positions, one stride-16 output -> SimpleFPN (strides
# 4..64, LN2d) -> RPN with 2 convs, Shared4Conv1FC box head and FCN mask head with LN2d; large-scale jitter
# (RandomResize 0.1-2.0 of 1024, RandomCrop 1024, Pad 1024); AdamW lr 1e-4, betas (0.9, 0.999), wd 0.1, layer-wise lr
# decay 0.7 over the 12 blocks, weight decay on everything but the backbone norms and pos_embed, AMP, fp16 gradient
# compression under DDP; 250 warm-up iterations, lr x0.1 at 163,889 and 177,546 (88 and 96 epochs).
# Field by field equal to mmdet's projects/ViTDet/configs/vitdet_mask-rcnn_vit-b-mae_lsj-100e.py except the fields
# listed with their reasons in docs/recipes.md (checked by tests/test_recipes.py).
# The variant configs (kat_{t,s,b}_maskrcnn.py, vit_{t,s,b}_maskrcnn.py) only set the backbone size / MLP type.
#
# Data: COCO 2017 under data/coco/ (mmdet's standard layout):
#   data/coco/annotations/instances_train2017.json
#   data/coco/annotations/instances_val2017.json
#   data/coco/train2017/*.jpg   (118,287 images)
#   data/coco/val2017/*.jpg     (5,000 images)
#
# Batch: 64 = 16 GPUs x 4 images (train_dataloader.batch_size is per GPU); with another GPU count either keep 64 in
# total (e.g. 8 GPUs x 8 images) or run with --auto-scale-lr (auto_scale_lr.base_batch_size=64 scales lr linearly).
# On a machine without CUDA, tools/train.py turns AmpOptimWrapper into OptimWrapper and SyncBN into BN.
_base_ = [
    'mmdet::_base_/models/mask-rcnn_r50_fpn.py',
    'mmdet::_base_/datasets/coco_instance.py',
    'mmdet::_base_/default_runtime.py',
]
custom_imports = dict(imports=['kat_backbones'], allow_failed_imports=False)

image_size = (1024, 1024)
backend_args = None
embed_dim = 768  # KAT-B; the tiny/small variants set the backbone and neck widths themselves
norm_cfg = dict(type='kat_backbones.LN2d', requires_grad=True)  # eps 1e-6, as ViTDet's LN2d
batch_augments = [dict(type='BatchFixedSizePad', size=image_size, pad_mask=True)]

model = dict(
    data_preprocessor=dict(pad_size_divisor=32, batch_augments=batch_augments),
    backbone=dict(
        _delete_=True,
        type='kat_backbones.KATBackbone',
        arch='base',
        img_size=image_size,
        patch_size=16,
        window_size=14,
        global_blocks=(2, 5, 8, 11),
        out_indices=(11,),
        mlp_type='kan',  # 'mlp': the ViT baseline (timm Mlp with GELU)
        kan_cfg=dict(num_groups=8, act_init='swish', kan_init='variance_preserving'),
        drop_path_rate=0.1,
        use_rel_pos=True,
        pretrain_img_size=224,
        final_norm=False,
        with_cp=False,  # True: activation checkpointing (less memory, ~30% slower)
        # the released ImageNet-1k KAT weights by name (downloaded once, SHA-256 checked, converted on the fly); a local
        # file instead: --cfg-options model.backbone.init_cfg.checkpoint=PATH.pth (see docs/detection.md)
        init_cfg=dict(type='Pretrained', checkpoint='timm:kat_base_patch16_224.in1k')),
    neck=dict(
        _delete_=True,
        type='kat_backbones.SimpleFPN',
        backbone_channel=embed_dim,
        in_channels=[embed_dim // 4, embed_dim // 2, embed_dim, embed_dim],
        out_channels=256,
        num_outs=5,
        norm_cfg=norm_cfg),
    rpn_head=dict(num_convs=2),
    roi_head=dict(
        bbox_head=dict(type='Shared4Conv1FCBBoxHead', conv_out_channels=256, norm_cfg=norm_cfg),
        mask_head=dict(norm_cfg=norm_cfg)))

# large-scale jitter
train_pipeline = [
    dict(type='LoadImageFromFile', backend_args=backend_args),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='RandomResize', scale=image_size, ratio_range=(0.1, 2.0), keep_ratio=True),
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
    num_workers=8,
    persistent_workers=True,
    # ViTDet batches in sampler order: every LSJ crop is 1024x1024, so mmdet's AspectRatioBatchSampler (inherited
    # from mmdet::_base_/datasets/coco_instance.py) would only change which images share a batch
    batch_sampler=None,
    dataset=dict(pipeline=train_pipeline))
val_dataloader = dict(dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader

optim_wrapper = dict(
    type='AmpOptimWrapper',
    constructor='kat_backbones.LayerDecayOptimizerConstructor',
    # lr x 0.7 ** (13 - layer): blocks.i is layer i + 1, patch/pos embedding layer 0, neck and heads 13 (x1).
    # ViTDet's weight-decay rules: wd 0 only for the backbone's norms and pos_embed; biases, neck/RoI-head LN2d,
    # rel_pos_h/w and the GR-KAN rational coefficients are decayed (the project's former rules as an ablation:
    # kat_b_maskrcnn_projectwd.py)
    paramwise_cfg=dict(
        decay_rate=0.7, decay_type='layer_wise', num_layers=12,
        norm_decay_scope='backbone', bias_decay_mult=1.0, rel_pos_decay_mult=1.0, rational_decay_mult=1.0),
    optimizer=dict(type='AdamW', lr=1e-4, betas=(0.9, 0.999), weight_decay=0.1))

# 100 epochs = 184,375 iterations x 64 images / 118k images
max_iters = 184375
interval = 5000
param_scheduler = [
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=250),
    # 88 and 96 epochs
    dict(type='MultiStepLR', begin=0, end=max_iters, by_epoch=False, milestones=[163889, 177546], gamma=0.1),
]
train_cfg = dict(
    type='IterBasedTrainLoop',
    max_iters=max_iters,
    val_interval=interval,
    dynamic_intervals=[(max_iters // interval * interval + 1, max_iters)])
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')

default_hooks = dict(
    logger=dict(type='LoggerHook', interval=50),
    checkpoint=dict(type='CheckpointHook', by_epoch=False, save_last=True, interval=interval, max_keep_ckpts=5))
log_processor = dict(type='LogProcessor', window_size=50, by_epoch=False)

# ViTDet's fp16 gradient compression: DDP all-reduces fp16 gradients (torch's fp16_compress_hook); mmdet credits it
# with 51.4 -> 51.6 box AP for ViT-B. Inactive in single-process runs.
custom_hooks = [dict(type='kat_backbones.Fp16CompressionHook')]

# total batch of the recipe; `tools/train.py --auto-scale-lr` rescales lr to the actual total batch (off by default)
auto_scale_lr = dict(base_batch_size=64)
