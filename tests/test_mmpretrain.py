"""mmpretrain downstream: configs/mmpretrain (the official KAT ImageNet recipe over mmpretrain's bases) and
KATBackbone inside mmpretrain's ImageClassifier with its layer-decay constructor, through mmpretrain's Runner on the
synthetic ImageFolder set (tiny images, a few iterations)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch

pytest.importorskip("mmpretrain")

from mmengine.config import Config  # noqa: E402
from mmengine.runner import Runner  # noqa: E402

import kat_backbones  # noqa: E402, F401  (registers the KAT models in timm)
from kat_backbones.apps.demo_data.imagenet import make_imagenet_demo  # noqa: E402
from kat_backbones.mm import KATBackbone  # noqa: E402
from tests.mm_utils import single_thread_fixture  # noqa: E402, F401  (fixture: single_thread)

pytestmark = pytest.mark.usefixtures("single_thread")

REPO = Path(__file__).resolve().parents[1]
CONFIG_DIR = REPO / "configs" / "mmpretrain"
IMG = 32  # 2 x 2 patches of 16 px


@pytest.fixture(scope="module")
def demo_root(tmp_path_factory) -> Path:
    return make_imagenet_demo(tmp_path_factory.mktemp("mmpretrain"), num_classes=4, num_train=16, num_val=8, size=IMG)


@pytest.mark.parametrize("size, name, drop_path", [("t", "tiny", 0.1), ("s", "small", 0.1), ("b", "base", 0.4)])
def test_configs_are_the_official_recipe(size, name, drop_path):
    cfg = Config.fromfile(str(CONFIG_DIR / f"kat_{size}_in1k.py"))
    assert cfg.default_scope == "mmpretrain"
    assert cfg.custom_imports.imports == ["kat_backbones", "kat_backbones.mm.mmpretrain_timm"]
    model = cfg.model
    assert model.type == "kat_backbones.MMPretrainTimmClassifier"
    assert model.model_name == f"kat_{name}_swish_patch16_224"
    assert model.drop_path_rate == drop_path and model.num_classes == 1000
    assert model.loss == dict(type="LabelSmoothLoss", label_smooth_val=0.1, mode="original")
    assert model.train_cfg.augments == [dict(type="Mixup", alpha=0.8), dict(type="CutMix", alpha=1.0)]
    # batch 1024 = 8 x 128 at lr 1e-3, AdamW wd 0.05, AMP
    assert cfg.train_dataloader.batch_size * 8 == cfg.auto_scale_lr.base_batch_size == 1024
    opt = cfg.optim_wrapper
    assert opt.type == "AmpOptimWrapper" and opt.optimizer.type == "AdamW"
    assert (opt.optimizer.lr, opt.optimizer.weight_decay) == (1e-3, 0.05)
    # 5 warm-up epochs from 1e-5, cosine to 1e-5 at 300 epochs
    warmup, cosine = cfg.param_scheduler
    assert (warmup.type, warmup.end) == ("LinearLR", 5)
    assert warmup.start_factor * opt.optimizer.lr == pytest.approx(1e-5)
    assert (cosine.type, cosine.begin, cosine.end, cosine.eta_min) == ("CosineAnnealingLR", 5, 300, 1e-5)
    assert cfg.train_cfg.max_epochs == 300
    train = {t.type: t for t in cfg.train_dataloader.dataset.pipeline}
    assert (train["RandAugment"].magnitude_level, train["RandAugment"].magnitude_std) == (9, 0.5)
    assert train["RandAugment"].policies == "timm_increasing" and train["RandAugment"].num_policies == 2
    assert train["RandomErasing"].erase_prob == 0.25 and train["RandomResizedCrop"].interpolation == "bicubic"
    test = {t.type: t for t in cfg.val_dataloader.dataset.pipeline}
    assert test["ResizeEdge"].scale == 256 and test["CenterCrop"].crop_size == 224  # crop_pct 0.875
    assert cfg.custom_hooks == [dict(type="EMAHook", momentum=1e-4, priority="ABOVE_NORMAL")]  # EMA 0.9999


def _tiny(cfg: Config, demo_root: Path, tmp_path: Path) -> Config:
    """The same config at demo scale: 32 px images, 4 classes, batch 8, fp32 (CPU), one epoch."""
    cfg.work_dir = str(tmp_path)
    cfg.optim_wrapper.type = "OptimWrapper"
    cfg.optim_wrapper.pop("loss_scale", None)
    cfg.data_preprocessor.num_classes = 4
    for loader, split in ((cfg.train_dataloader, "train"), (cfg.val_dataloader, "val")):
        loader.batch_size = 8
        loader.num_workers = 0
        loader.persistent_workers = False
        loader.dataset = dict(
            type="CustomDataset", data_root=str(demo_root), data_prefix=split, pipeline=loader.dataset.pipeline)
    for t in cfg.train_dataloader.dataset.pipeline:
        if t.type == "RandomResizedCrop":
            t.scale = IMG
    for t in cfg.val_dataloader.dataset.pipeline:
        if t.type == "ResizeEdge":
            t.scale = IMG * 8 // 7
        if t.type == "CenterCrop":
            t.crop_size = IMG
    cfg.test_dataloader = cfg.val_dataloader
    cfg.val_evaluator = dict(type="Accuracy", topk=(1, 2))
    cfg.test_evaluator = cfg.val_evaluator
    cfg.train_cfg.max_epochs = 1
    cfg.param_scheduler = [dict(type="LinearLR", start_factor=0.01, by_epoch=True, begin=0, end=1,
                                convert_to_iter_based=True)]
    cfg.default_hooks.checkpoint = dict(type="CheckpointHook", interval=1)
    cfg.default_hooks.logger = dict(type="LoggerHook", interval=1)
    cfg.log_level = logging.WARNING
    cfg.env_cfg.dist_cfg.backend = "gloo"
    return cfg


def test_official_recipe_trains_through_mmpretrain_runner(demo_root, tmp_path):
    cfg = _tiny(Config.fromfile(str(CONFIG_DIR / "kat_t_in1k.py")), demo_root, tmp_path)
    cfg.model.num_classes = 4
    cfg.model.img_size = IMG
    runner = Runner.from_cfg(cfg)
    from mmpretrain.models import TimmClassifier

    assert isinstance(runner.model, TimmClassifier) and type(runner.model.model.blocks[0].mlp).__name__ == "KAN"
    before = runner.model.model.blocks[0].mlp.act2.weight_denominator.detach().clone()
    metrics = runner.train() and runner.val()
    assert runner.iter == 2  # 16 images / batch 8
    after = runner.model.model.blocks[0].mlp.act2.weight_denominator
    assert not torch.equal(before, after)  # the rationals train
    assert set(metrics) == {"accuracy/top1", "accuracy/top2"} and 0 <= metrics["accuracy/top1"] <= 100
    # the checkpoint: timm's key names for the model and (EMAHook's swap) for the EMA copy; it loads into timm
    ckpt = torch.load(tmp_path / "epoch_1.pth", map_location="cpu", weights_only=False)
    assert "cls_token" in ckpt["state_dict"] and "module.cls_token" in ckpt["ema_state_dict"]
    import timm

    timm_model = timm.create_model("kat_tiny_swish_patch16_224", num_classes=4, img_size=IMG)
    timm_model.load_state_dict({k: v for k, v in ckpt["state_dict"].items()})


LAYER_DECAY_CFG = dict(
    model=dict(
        type="ImageClassifier",
        backbone=dict(type="kat_backbones.KATBackbone", arch="tiny", img_size=IMG, window_size=0, global_blocks=(),
                      use_rel_pos=False, out_indices=(11,), final_norm=True, drop_path_rate=0.1),
        neck=dict(type="GlobalAveragePooling"),
        head=dict(type="LinearClsHead", num_classes=4, in_channels=192,
                  loss=dict(type="LabelSmoothLoss", label_smooth_val=0.1, mode="original"))),
    optim_wrapper=dict(
        optimizer=dict(type="AdamW", lr=5e-4, weight_decay=0.05),
        constructor="LearningRateDecayOptimWrapperConstructor",
        paramwise_cfg=dict(layer_decay_rate=0.65, norm_decay_mult=0.0, bias_decay_mult=0.0,
                           custom_keys={".pos_embed": dict(decay_mult=0.0)})),
)


def test_layer_decay_constructor_with_kat_backbone(demo_root, tmp_path):
    """mmpretrain's LearningRateDecayOptimWrapperConstructor on ImageClassifier(KATBackbone) (fine-tuning style):
    lr x 0.65 ** (13 - depth), depth 0 for the embeddings, i + 1 for blocks.i, 13 for the final norm and the head."""
    cfg = _tiny(Config.fromfile(str(CONFIG_DIR / "kat_t_in1k.py")), demo_root, tmp_path)
    cfg.model = LAYER_DECAY_CFG["model"]
    cfg.optim_wrapper = LAYER_DECAY_CFG["optim_wrapper"]
    cfg.custom_hooks = []
    runner = Runner.from_cfg(cfg)
    assert isinstance(runner.model.backbone, KATBackbone)
    runner.train()
    assert runner.iter == 2
    groups = {g["param_name"]: g for g in runner.optim_wrapper.optimizer.param_groups}
    base_lr = 5e-4
    expected_depth = {
        "backbone.patch_embed.proj.weight": 0, "backbone.pos_embed": 0, "backbone.blocks.0.attn.qkv.weight": 1,
        "backbone.blocks.11.mlp.act2.weight_denominator": 12, "backbone.norm.weight": 13, "head.fc.weight": 13,
    }
    for name, depth in expected_depth.items():
        assert groups[name]["layer_id"] == depth, name
        assert groups[name]["lr_scale"] == pytest.approx(0.65 ** (13 - depth)), name
    assert groups["backbone.pos_embed"]["weight_decay"] == 0 and groups["backbone.blocks.0.norm1.weight"][
        "weight_decay"] == 0
    assert groups["backbone.blocks.0.mlp.act2.weight_numerator"]["weight_decay"] == 0.05  # 2-D: decayed
    # after the (one-epoch) warm-up: the head at the base lr, the blocks below it by their scales
    ratio = groups["backbone.blocks.0.attn.qkv.weight"]["lr"] / groups["head.fc.weight"]["lr"]
    assert ratio == pytest.approx(0.65**12) and groups["head.fc.weight"]["lr"] == pytest.approx(base_lr)


def test_get_layer_depth_convention():
    bb = KATBackbone("tiny", img_size=IMG, window_size=0, global_blocks=(), out_indices=(11,), use_rel_pos=False)
    assert bb.get_layer_depth("backbone.cls_token", "backbone.") == (0, 14)
    assert bb.get_layer_depth("backbone.patch_embed.proj.bias", "backbone.") == (0, 14)
    assert bb.get_layer_depth("backbone.blocks.5.mlp.fc1.weight", "backbone.") == (6, 14)
    assert bb.get_layer_depth("backbone.norm.weight", "backbone.") == (13, 14)
    assert bb.get_layer_depth("head.fc.weight", "backbone.") == (13, 14)
    assert bb.get_layer_depth("blocks.0.norm1.weight") == (1, 14)
