# UperNet + plain KAT-B on ADE20K 512x512, 160k iterations: mmseg's MAE-B fine-tuning recipe
# (mmseg::mae/mae-base_upernet_8xb2-amp-160k_ade20k-512x512.py, 48.13 mIoU with MAE-pretrained ViT-B).
#
# Everything not set here comes from the same mmseg bases as that config (model: upernet_mae.py, i.e. Feature2Pyramid
# + UPerHead + auxiliary FCNHead; data: ade20k.py; runtime; 160k schedule). Field by field equal to it except the
# fields listed with their reasons in docs/recipes.md (checked by tests/test_recipes.py). kat_b_upernet.py and
# vit_b_upernet.py use this base; the T/S configs follow mmseg's DeiT-S recipe
# (_base_/upernet_kat-deit_ade20k-512x512.py).
#
# Data (see docs/segmentation.md): ADEChallengeData2016 unpacked under data/ade/:
#   data/ade/ADEChallengeData2016/images/{training,validation}/*.jpg
#   data/ade/ADEChallengeData2016/annotations/{training,validation}/*.png   (0 = other -> ignored, 1..150 = classes)
#
# Batch: 16 = 8 GPUs x 2 images (train_dataloader.batch_size is per GPU). On CPU, tools/train.py turns
# AmpOptimWrapper into OptimWrapper and SyncBN into BN.
_base_ = [
    'mmseg::_base_/models/upernet_mae.py',
    'mmseg::_base_/datasets/ade20k.py',
    'mmseg::_base_/default_runtime.py',
    'mmseg::_base_/schedules/schedule_160k.py',
]
custom_imports = dict(imports=['kat_backbones'], allow_failed_imports=False)

crop_size = (512, 512)
embed_dim = 768  # KAT-B
norm_cfg = dict(type='SyncBN', requires_grad=True)
data_preprocessor = dict(size=crop_size)

model = dict(
    data_preprocessor=data_preprocessor,
    pretrained=None,
    backbone=dict(
        _delete_=True,
        type='kat_backbones.KATBackbone',
        arch='base',
        img_size=crop_size,
        patch_size=16,
        window_size=0,  # global attention in every block, as mmseg's MAE (and every mmseg ViT/DeiT reference)
        global_blocks=(),
        out_indices=(3, 5, 7, 11),  # MAE/BEiT-style taps: four stride-16 maps
        mlp_type='kan',  # 'mlp' = the ViT baseline
        kan_cfg=dict(num_groups=8, act_init='swish', kan_init='variance_preserving'),
        drop_path_rate=0.1,
        # relative positions in every block, zero-initialised, as mmseg's MAE (whose layers carry a BEiT bias table;
        # the KAT backbone has ViTDet's decomposed form), on top of the absolute position embedding
        use_rel_pos=True,
        pretrain_img_size=224,
        final_norm=False,
        with_cp=False,
        # the released ImageNet-1k KAT weights by name (downloaded once, SHA-256 checked, converted on the fly); a local
        # file instead: --cfg-options model.backbone.init_cfg.checkpoint=PATH.pth (see docs/segmentation.md)
        init_cfg=dict(type='Pretrained', checkpoint='timm:kat_base_patch16_224.in1k')),
    # four stride-16 maps -> strides 4, 8, 16, 32 (deconv x2 / deconv / identity / max-pool)
    neck=dict(type='Feature2Pyramid', embed_dim=embed_dim, rescales=[4, 2, 1, 0.5], norm_cfg=norm_cfg),
    decode_head=dict(
        in_channels=[embed_dim] * 4,
        in_index=[0, 1, 2, 3],
        pool_scales=(1, 2, 3, 6),
        channels=768,  # MAE's UPerHead width (the ViT/DeiT configs use 512)
        num_classes=150,
        norm_cfg=norm_cfg),
    # auxiliary FCN head on the 3rd pyramid level (stride 16), loss weight 0.4
    auxiliary_head=dict(in_channels=embed_dim, in_index=2, num_classes=150, norm_cfg=norm_cfg),
    test_cfg=dict(mode='slide', crop_size=crop_size, stride=(341, 341)))

# MAE recipe: AdamW lr 1e-4, wd 0.05, layer-wise lr decay 0.65 over the 12 blocks, mixed precision (the published
# config asks for it with `fp16 = dict(loss_scale='dynamic')`, a key mmengine ignores: mmseg's `tools/train.py --amp`
# makes it an AmpOptimWrapper with a dynamic loss scale, written here directly).
# mmseg's LayerDecayOptimizerConstructor only accepts its own BEiT/MAE classes; ours reproduces its rules: lr x
# 0.65 ** (13 - layer) (patch/pos embedding layer 0, blocks.i layer i + 1, neck and heads x1) and no weight decay for
# 1-D tensors (norms) and biases only; pos_embed (3-D) and the 2-D rational coefficients are decayed, as there.
optim_wrapper = dict(
    _delete_=True,
    type='AmpOptimWrapper',
    loss_scale='dynamic',
    optimizer=dict(type='AdamW', lr=1e-4, betas=(0.9, 0.999), weight_decay=0.05),
    constructor='kat_backbones.LayerDecayOptimizerConstructor',
    paramwise_cfg=dict(num_layers=12, layer_decay_rate=0.65, pos_embed_decay_mult=1.0, rational_decay_mult=1.0))

# 1500-iteration linear warm-up, then poly (power 1) decay to 0 at 160k.
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-6, by_epoch=False, begin=0, end=1500),
    dict(type='PolyLR', eta_min=0.0, power=1.0, begin=1500, end=160000, by_epoch=False),
]
train_cfg = dict(type='IterBasedTrainLoop', max_iters=160000, val_interval=16000)

# 8 GPUs x 2 images = 16 per iteration
train_dataloader = dict(batch_size=2)
val_dataloader = dict(batch_size=1)
test_dataloader = val_dataloader
# total batch of the recipe, for `tools/train.py --auto-scale-lr` (off by default)
auto_scale_lr = dict(base_batch_size=16)
