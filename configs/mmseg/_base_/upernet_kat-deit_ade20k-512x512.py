# UperNet + plain KAT-S on ADE20K 512x512, 80k iterations: mmseg's DeiT-S recipe
# (mmseg::vit/vit_deit-s16_upernet_8xb2-80k_ade20k-512x512.py, 42.96 mIoU with DeiT-S): the backbone's blocks
# 2/5/8/11 straight into UPerHead (no neck: four stride-16 maps), auxiliary FCNHead on the last one, AdamW lr 6e-5,
# wd 0.01, 1500 warm-up iterations then poly, fp32.
#
# Everything not set here comes from the same mmseg bases as that config (model: upernet_vit-b16_ln_mln.py; data:
# ade20k.py; runtime; 80k schedule). Field by field equal to it except the fields listed with their reasons in
# docs/recipes.md (checked by tests/test_recipes.py). kat_{t,s}_upernet.py and vit_{t,s}_upernet.py use this base
# (KAT-T/ViT-T: the DeiT-S recipe at T width; mmseg publishes no T config).
#
# Data (see docs/segmentation.md): ADEChallengeData2016 unpacked under data/ade/:
#   data/ade/ADEChallengeData2016/images/{training,validation}/*.jpg
#   data/ade/ADEChallengeData2016/annotations/{training,validation}/*.png   (0 = other -> ignored, 1..150 = classes)
#
# Batch: 16 = 8 GPUs x 2 images (train_dataloader.batch_size is per GPU). On CPU, tools/train.py turns SyncBN into BN.
_base_ = [
    'mmseg::_base_/models/upernet_vit-b16_ln_mln.py',
    'mmseg::_base_/datasets/ade20k.py',
    'mmseg::_base_/default_runtime.py',
    'mmseg::_base_/schedules/schedule_80k.py',
]
custom_imports = dict(imports=['kat_backbones'], allow_failed_imports=False)

crop_size = (512, 512)
embed_dim = 384  # KAT-S; kat_t_upernet.py sets 192
data_preprocessor = dict(size=crop_size)

model = dict(
    data_preprocessor=data_preprocessor,
    pretrained=None,
    backbone=dict(
        _delete_=True,
        type='kat_backbones.KATBackbone',
        arch='small',
        img_size=crop_size,
        patch_size=16,
        window_size=0,  # global attention in every block, as mmseg's VisionTransformer
        global_blocks=(),
        out_indices=(2, 5, 8, 11),
        mlp_type='kan',  # 'mlp' = the ViT baseline
        kan_cfg=dict(num_groups=8, act_init='swish', kan_init='variance_preserving'),
        drop_path_rate=0.1,
        use_rel_pos=False,  # absolute position embedding only
        pretrain_img_size=224,
        final_norm=False,
        with_cp=False,
        # The released KAT ImageNet-1k weights by name (downloaded once, SHA-256 checked, converted on the fly). A local
        # file instead: --cfg-options model.backbone.init_cfg.checkpoint=PATH.pth (see docs/segmentation.md)
        init_cfg=dict(type='Pretrained', checkpoint='timm:kat_small_patch16_224.in1k')),
    neck=None,
    decode_head=dict(num_classes=150, in_channels=[embed_dim] * 4),
    auxiliary_head=dict(num_classes=150, in_channels=embed_dim))

# AdamW, no weight decay for pos_embed, cls_token and names containing 'norm' (the published keys; see
# docs/recipes.md for what 'norm' matches in mmseg's VisionTransformer and here)
optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=0.00006, betas=(0.9, 0.999), weight_decay=0.01),
    paramwise_cfg=dict(
        custom_keys={
            'pos_embed': dict(decay_mult=0.),
            'cls_token': dict(decay_mult=0.),
            'norm': dict(decay_mult=0.)
        }))

# 1500-iteration linear warm-up, then poly (power 1) decay to 0 at 80k.
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-6, by_epoch=False, begin=0, end=1500),
    dict(type='PolyLR', eta_min=0.0, power=1.0, begin=1500, end=80000, by_epoch=False),
]

# 8 GPUs x 2 images = 16 per iteration
train_dataloader = dict(batch_size=2)
val_dataloader = dict(batch_size=1)
test_dataloader = val_dataloader

# total batch of the recipe, for `tools/train.py --auto-scale-lr` (off by default)
auto_scale_lr = dict(base_batch_size=16)
