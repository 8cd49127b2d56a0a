"""Classification through mmengine's Runner: the ImageFolder demo set, mmpretrain's CustomDataset + timm transforms,
TimmClassifier (loss with mixup/cutmix, predict, ViT -> KAT checkpoint), the Accuracy metric, configs/imagenet and a
tools/train.py run.

Everything runs on CPU at 32 px with a handful of images.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
from PIL import Image

pytest.importorskip("mmengine")
pytestmark = [
    pytest.mark.filterwarnings("ignore:pkg_resources is deprecated:UserWarning"),
    pytest.mark.usefixtures("single_thread"),  # many small ops: two OpenMP threads on a shared 2-core box spin-wait
]

from mmengine.config import Config  # noqa: E402
from mmengine.optim import build_optim_wrapper  # noqa: E402
from mmengine.registry import DATASETS, METRICS, MODELS, init_default_scope  # noqa: E402

from kat_backbones.apps.demo_data.imagenet import CLASSES, make_imagenet_demo  # noqa: E402
from kat_backbones.checkpoint import save_state_dict  # noqa: E402
from kat_backbones.mm import convert_cfg_for_cpu  # noqa: E402
from kat_backbones.mm.cls import TimmClassifier, TimmTransform  # noqa: E402
from tests.mm_utils import single_thread_fixture  # noqa: E402, F401  (fixture: single_thread)
from tools import make_demo_data, train  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
CONFIG_DIR = REPO / "configs" / "imagenet"
RECIPE_CONFIGS = ["kat_t_in1k.py", "kat_s_in1k.py", "kat_b_in1k.py"]
VITFT_CONFIGS = ["kat_t_in1k_vitft.py", "kat_s_in1k_vitft.py", "kat_b_in1k_vitft.py"]
SIZES = {"t": ("tiny", 192, 0.1), "s": ("small", 384, 0.1), "b": ("base", 768, 0.4)}
PARAMS = {"tiny": 5_718_328, "small": 22_051_576, "base": 86_568_568}  # the KAT paper's counts (1000 classes)


def tiny_classifier(**kwargs) -> TimmClassifier:
    args = dict(model_name="kat_tiny_swish_patch16_224", num_classes=4, img_size=32, drop_path_rate=0.1)
    return TimmClassifier(**{**args, **kwargs})


@pytest.fixture(scope="module", name="cls_demo")
def cls_demo_fixture(tmp_path_factory) -> Path:
    """4 classes, 16 training / 8 validation images of 32 px."""
    return make_imagenet_demo(tmp_path_factory.mktemp("data"), num_classes=4, num_train=16, num_val=8, size=32)


# --------------------------------------------------------------------------------------------------- demo data
def test_make_imagenet_demo_layout_and_determinism(tmp_path):
    root = make_imagenet_demo(tmp_path / "a", num_classes=3, num_train=7, num_val=4, size=24, seed=2)
    assert root == tmp_path / "a" / "imagenet_demo"
    for split, count in (("train", 7), ("val", 4)):
        assert sorted(p.name for p in (root / split).iterdir()) == sorted(CLASSES[:3])
        files = sorted((root / split).glob("*/*.JPEG"))
        assert len(files) == count
        per_class = [len(list((root / split / c).glob("*.JPEG"))) for c in CLASSES[:3]]
        assert max(per_class) - min(per_class) <= 1 and min(per_class) >= 1  # round-robin
        for f in files:
            img = Image.open(f)
            assert (img.format, img.mode, img.size) == ("JPEG", "RGB", (24, 24))

    again = make_imagenet_demo(tmp_path / "b", num_classes=3, num_train=7, num_val=4, size=24, seed=2)
    other = make_imagenet_demo(tmp_path / "c", num_classes=3, num_train=7, num_val=4, size=24, seed=3)
    files = sorted(p.relative_to(root) for p in root.rglob("*.JPEG"))
    assert files == sorted(p.relative_to(again) for p in again.rglob("*.JPEG"))
    assert all((root / f).read_bytes() == (again / f).read_bytes() for f in files)
    assert any((root / f).read_bytes() != (other / f).read_bytes() for f in files)
    with pytest.raises(ValueError, match="num_classes"):
        make_imagenet_demo(tmp_path / "d", num_classes=len(CLASSES) + 1)


def test_demo_classes_have_their_own_hue():
    """Each class is drawn in its own hue (a cue that survives RandAugment's geometry ops): the hue of the most
    saturated pixels identifies the class."""
    import colorsys

    from kat_backbones.apps.demo_data.imagenet import HUES, render_sample

    rng = np.random.default_rng(0)
    for label, hue in enumerate(HUES):
        for _ in range(4):
            pixels = render_sample(rng, label, (32, 32)).reshape(-1, 3) / 255.0
            hsv = np.array([colorsys.rgb_to_hsv(*p) for p in pixels])
            top = hsv[np.argsort(hsv[:, 1])[-20:], 0]  # the 20 most saturated pixels
            diff = np.abs((np.median(top) - hue + 0.5) % 1.0 - 0.5)
            assert diff < 0.05, (CLASSES[label], np.median(top), hue)


def test_make_demo_data_tool(tmp_path):
    assert make_demo_data.main(["--task", "imagenet", "--out", str(tmp_path), "--num-train", "4", "--num-val", "4",
                      "--size", "16"]) == 0
    assert len(list((tmp_path / "imagenet_demo" / "train").glob("*/*.JPEG"))) == 4


# --------------------------------------------------------------------------------------------------- data
def test_config_dataset_is_mmpretrain_custom_dataset_with_timm_transform(cls_demo):
    """configs/imagenet's dataset is mmpretrain's CustomDataset: on the demo set it lists every image of
    <split>/<class>/ (classes = sorted folder names, files sorted per class, label = class position) and
    TimmTransform turns its entries into normalised tensors with the integer label."""
    from mmpretrain.datasets import CustomDataset

    cfg = Config.fromfile(str(CONFIG_DIR / "kat_t_demo.py"))
    init_default_scope(cfg.default_scope)
    for loader, split, count in (("train_dataloader", "train", 16), ("val_dataloader", "val", 8)):
        dataset_cfg = cfg[loader].dataset
        assert dataset_cfg.type == "mmpretrain.CustomDataset"
        dataset_cfg.update(data_root=str(cls_demo))
        for step in dataset_cfg.pipeline:
            step.update(input_size=32)
        ds = DATASETS.build(dataset_cfg)
        assert isinstance(ds, CustomDataset) and len(ds) == count
        classes = tuple(sorted(p.name for p in (cls_demo / split).iterdir()))
        assert ds.metainfo["classes"] == classes == tuple(sorted(CLASSES[:4]))
        expected = [(str(f), label) for label, name in enumerate(classes)
                    for f in sorted((cls_demo / split / name).glob("*.JPEG"))]
        assert [(ds.get_data_info(i)["img_path"], ds.get_data_info(i)["gt_label"]) for i in range(count)] == expected
        sample = ds[3]
        assert set(sample) == {"inputs", "data_samples"}
        assert sample["inputs"].shape == (3, 32, 32) and sample["inputs"].dtype == torch.float32
        assert sample["data_samples"] == expected[3][1] and isinstance(sample["data_samples"], int)

    # a missing split folder is a clear error naming it
    missing = dict(type="mmpretrain.CustomDataset", data_root=str(cls_demo), data_prefix=dict(img_path="nope"))
    with pytest.raises(FileNotFoundError, match=re.escape(str(cls_demo / "nope"))):
        DATASETS.build(missing)


def test_timm_transform_eval_is_deterministic(cls_demo):
    tf = TimmTransform(input_size=32, interpolation="bicubic", crop_pct=0.875)
    path = next((cls_demo / "val").glob("*/*.JPEG"))
    a, b = tf(dict(img_path=str(path), gt_label=1)), tf(dict(img_path=str(path), gt_label=1))
    assert torch.equal(a["inputs"], b["inputs"]) and a["data_samples"] == 1
    assert abs(float(a["inputs"].mean())) < 3  # normalised
    with pytest.raises(ValueError, match="prefetcher"):
        TimmTransform(input_size=32, use_prefetcher=True)


# --------------------------------------------------------------------------------------------------- metric
def test_predictions_feed_mmpretrain_accuracy():
    """TimmClassifier.predict's outputs go through mmpretrain's Accuracy (the configs' metric) as timm's accuracy."""
    from mmpretrain.evaluation import Accuracy

    init_default_scope("kat_backbones")
    metric = METRICS.build(dict(type="mmpretrain.Accuracy", topk=(1, 2)))
    assert isinstance(metric, Accuracy)
    model = TimmClassifier("kat_tiny_swish_patch16_224", num_classes=3, img_size=32, depth=1).eval()
    images, labels = torch.randn(6, 3, 32, 32), torch.tensor([0, 2, 0, 2, 1, 1])
    metric.process({}, model.predict(images, labels))
    logits = model(images)
    ref = timm.utils.accuracy(logits, labels, topk=(1, 2))
    got = metric.evaluate(6)
    assert got == pytest.approx({"accuracy/top1": float(ref[0]), "accuracy/top2": float(ref[1])})


# --------------------------------------------------------------------------------------------------- model
def test_classifier_loss_predict_and_mixup():
    model = MODELS.build(dict(type="kat_backbones.TimmClassifier", model_name="kat_tiny_swish_patch16_224",
                              num_classes=4, img_size=32, drop_path_rate=0.1,
                              mixup=dict(mixup_alpha=0.8, cutmix_alpha=1.0, label_smoothing=0.1)))
    assert isinstance(model, TimmClassifier) and model.mixup_fn is not None
    assert type(model.train_loss).__name__ == "SoftTargetCrossEntropy"
    assert model.mixup_fn.label_smoothing == 0.1 and model.mixup_fn.num_classes == 4

    before = {k: v.clone() for k, v in model.state_dict().items()}
    model.init_weights()  # must not re-draw timm's / the KAN init
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())

    data = dict(inputs=[torch.randn(3, 32, 32) for _ in range(4)], data_samples=[0, 1, 2, 3])
    batch = model.data_preprocessor(data, training=True)
    assert batch["inputs"].shape == (4, 3, 32, 32) and batch["data_samples"].tolist() == [0, 1, 2, 3]
    model.train()
    losses = model(**batch, mode="loss")
    assert set(losses) == {"loss"} and torch.isfinite(losses["loss"])
    losses["loss"].backward()
    assert model.model.blocks[0].mlp.act2.weight_denominator.grad is not None
    with pytest.raises(ValueError, match="even batch"):
        model(batch["inputs"][:3], batch["data_samples"][:3], mode="loss")

    model.eval()
    preds = model.val_step(data)
    assert len(preds) == 4
    for p, gt in zip(preds, range(4)):
        assert p["pred_score"].shape == (4,) and math.isclose(float(p["pred_score"].sum()), 1.0, rel_tol=1e-5)
        assert int(p["pred_label"]) == int(p["pred_score"].argmax()) and int(p["gt_label"]) == gt
    assert model(batch["inputs"], mode="tensor").shape == (4, 4)

    assert type(tiny_classifier(label_smoothing=0.1).train_loss).__name__ == "LabelSmoothingCrossEntropy"
    plain = tiny_classifier(mixup=dict(mixup_alpha=0.0, cutmix_alpha=0.0))
    assert plain.mixup_fn is None and isinstance(plain.train_loss, torch.nn.CrossEntropyLoss)


def test_classifier_checkpoint_vit_to_kat(tmp_path):
    """KAT* start: a timm ViT-Ti state dict (224 px, 1000 classes) into KAT-T gelu at 32 px with 4 classes."""
    vit = timm.create_model("vit_tiny_patch16_224")
    path = tmp_path / "vit_tiny.safetensors"
    save_state_dict(vit.state_dict(), path)
    fresh = tiny_classifier(model_name="kat_tiny_gelu_patch16_224")
    model = tiny_classifier(model_name="kat_tiny_gelu_patch16_224", checkpoint=str(path))
    sd, vit_sd, fresh_sd = model.model.state_dict(), vit.state_dict(), fresh.model.state_dict()
    for key in ("blocks.0.mlp.fc1.weight", "blocks.11.mlp.fc2.bias", "blocks.5.attn.qkv.weight", "cls_token"):
        assert torch.equal(sd[key], vit_sd[key])
    assert sd["pos_embed"].shape == (1, 5, 192)  # resized from the 14 x 14 grid to 2 x 2
    for key in ("blocks.3.mlp.act2.weight_numerator", "blocks.3.mlp.act1.weight_denominator"):
        assert torch.equal(sd[key], fresh_sd[key])  # rationals keep their (gelu / identity) init
    assert sd["head.weight"].shape == (4, 192)  # 1000-class head not loaded

    # and a KAT checkpoint of the same shape loads as is
    kat_path = tmp_path / "kat.pth"
    save_state_dict(model.model.state_dict(), kat_path)
    again = tiny_classifier(model_name="kat_tiny_gelu_patch16_224", checkpoint=str(kat_path))
    assert all(torch.equal(v, again.model.state_dict()[k]) for k, v in sd.items())
    # the weights of a TimmClassifier run ('state_dict' with 'model.' keys, as mmengine saves them)
    run_path = tmp_path / "run.pth"
    torch.save(dict(state_dict=model.state_dict()), run_path)
    from_run = tiny_classifier(model_name="kat_tiny_gelu_patch16_224", checkpoint=str(run_path))
    assert all(torch.equal(v, from_run.model.state_dict()[k]) for k, v in sd.items())


# --------------------------------------------------------------------------------------------------- configs
def test_config_set_is_complete():
    names = {p.name for p in CONFIG_DIR.glob("*.py")}
    assert names == {*RECIPE_CONFIGS, *VITFT_CONFIGS, "kat_t_demo.py"}
    assert (CONFIG_DIR / "_base_" / "kat_in1k.py").is_file()


@pytest.mark.parametrize("name", RECIPE_CONFIGS)
def test_recipe_config_builds(name):
    """KAT ImageNet recipe values; the model builds with the paper's parameter count; CPU conversion; optimizer
    groups."""
    cfg = Config.fromfile(str(CONFIG_DIR / name))
    size, dim, drop_path = SIZES[name[4]]
    assert cfg.default_scope == "kat_backbones"
    assert cfg.custom_imports == dict(imports=["kat_backbones"], allow_failed_imports=False)
    m = cfg.model
    assert (m.model_name, m.num_classes, m.drop_path_rate) == (f"kat_{size}_swish_patch16_224", 1000, drop_path)
    assert m.mixup.mixup_alpha == 0.8 and m.mixup.cutmix_alpha == 1.0 and m.mixup.label_smoothing == 0.1
    train_tf, test_tf = cfg.train_dataloader.dataset.pipeline[0], cfg.val_dataloader.dataset.pipeline[0]
    assert train_tf.auto_augment == "rand-m9-mstd0.5-inc1" and train_tf.re_prob == 0.25
    assert train_tf.interpolation == test_tf.interpolation == "bicubic" and test_tf.crop_pct == 0.875
    assert cfg.train_dataloader.dataset.data_root == "data/imagenet/"
    assert cfg.train_dataloader.batch_size * 8 == cfg.auto_scale_lr.base_batch_size == 1024
    opt = cfg.optim_wrapper
    assert opt.type == "AmpOptimWrapper"
    assert (opt.optimizer.type, opt.optimizer.lr, opt.optimizer.weight_decay) == ("AdamW", 1e-3, 0.05)
    warmup, cosine = cfg.param_scheduler
    assert warmup.type == "LinearLR" and math.isclose(warmup.start_factor * opt.optimizer.lr, 1e-5)
    assert (warmup.end, cosine.type, cosine.begin, cosine.end) == (5, "CosineAnnealingLR", 5, 300)
    assert cfg.train_cfg.max_epochs == 300
    (ema,) = cfg.custom_hooks
    assert ema.type == "EMAHook" and math.isclose(1 - ema.momentum, 0.9999)

    changes = convert_cfg_for_cpu(cfg)  # what tools/train.py does without a GPU
    assert "optim_wrapper.type: AmpOptimWrapper -> OptimWrapper" in changes and cfg.optim_wrapper.type == "OptimWrapper"
    assert "loss_scale" not in cfg.optim_wrapper

    model = MODELS.build(cfg.model)
    assert sum(p.numel() for p in model.parameters()) == PARAMS[size]
    assert model.model.embed_dim == dim and model.model.num_classes == 1000
    groups = build_optim_wrapper(model, cfg.optim_wrapper).optimizer.param_groups
    decay = {id(p): g["weight_decay"] for g in groups for p in g["params"]}
    named = dict(model.named_parameters())
    assert decay[id(named["model.pos_embed"])] == decay[id(named["model.cls_token"])] == 0.0
    assert decay[id(named["model.blocks.0.norm1.weight"])] == decay[id(named["model.head.bias"])] == 0.0
    assert decay[id(named["model.blocks.0.mlp.fc1.weight"])] == 0.05
    assert decay[id(named["model.blocks.0.mlp.act2.weight_denominator"])] == 0.05  # rationals decayed (reference)


@pytest.mark.parametrize("name", VITFT_CONFIGS)
def test_vitft_config(name, tmp_path):
    """Same recipe as the scratch config; gelu KAT from a ViT checkpoint. KAT-T builds with a real ViT file."""
    cfg = Config.fromfile(str(CONFIG_DIR / name))
    scratch = Config.fromfile(str(CONFIG_DIR / name.replace("_vitft", "")))
    size = SIZES[name[4]][0]
    assert cfg.model.model_name == f"kat_{size}_gelu_patch16_224" and timm.is_model(cfg.model.model_name)
    assert cfg.model.checkpoint == f"timm:deit_{size}_patch16_224.fb_in1k"
    rest = {k: v for k, v in cfg.model.items() if k not in ("model_name", "checkpoint")}
    assert rest == {k: v for k, v in scratch.model.items() if k not in ("model_name", "checkpoint")}
    assert {k: v for k, v in cfg.items() if k != "model"} == {k: v for k, v in scratch.items() if k != "model"}
    if size != "tiny":
        return  # S/B architectures are built by test_recipe_config_builds
    vit = timm.create_model("deit_tiny_patch16_224")
    path = tmp_path / "deit_tiny_patch16_224.pth"
    torch.save(dict(model=vit.state_dict()), path)  # DeiT's release layout: {'model': state_dict}
    cfg.model.checkpoint = str(path)
    model = MODELS.build(cfg.model)
    assert torch.equal(model.model.blocks[4].mlp.fc1.weight, vit.blocks[4].mlp.fc1.weight)
    assert torch.equal(model.model.head.weight, vit.head.weight)  # 1000 classes: the head is kept too


# --------------------------------------------------------------------------------------------------- Runner
def test_demo_config_train_script_runner(cls_demo, tmp_path):
    """tools/train.py on the demo config, AMP + EMA as in the recipe: 20 iterations, evaluation, checkpoint."""
    cfg_file = tmp_path / "tiny_demo.py"
    cfg_file.write_text(
        f"_base_ = {str(CONFIG_DIR / 'kat_t_demo.py')!r}\n"
        "img_size = 32\n"
        "model = dict(img_size=img_size)\n"
        "train_dataloader = dict(batch_size=4, dataset=dict(data_root=DATA, pipeline=[dict(\n"
        "    type='kat_backbones.TimmTransform', input_size=img_size, is_training=True,\n"
        "    auto_augment='rand-m9-mstd0.5-inc1', interpolation='bicubic', re_prob=0.25, re_mode='pixel')]))\n"
        "val_dataloader = dict(batch_size=4, dataset=dict(data_root=DATA, pipeline=[dict(\n"
        "    type='kat_backbones.TimmTransform', input_size=img_size, interpolation='bicubic', crop_pct=0.875)]))\n"
        "test_dataloader = val_dataloader\n"
        "optim_wrapper = dict(type='AmpOptimWrapper', loss_scale='dynamic')\n"
        "custom_hooks = [dict(type='EMAHook', ema_type='ExponentialMovingAverage', momentum=0.1, priority=49)]\n"
        "max_epochs = 5\n"
        "param_scheduler = [\n"
        "    dict(type='LinearLR', start_factor=0.01, by_epoch=True, begin=0, end=1, convert_to_iter_based=True),\n"
        "    dict(type='CosineAnnealingLR', T_max=4, eta_min=1e-5, by_epoch=True, begin=1, end=5,\n"
        "         convert_to_iter_based=True)]\n"
        "train_cfg = dict(max_epochs=max_epochs, val_interval=max_epochs)\n"
        "default_hooks = dict(logger=dict(interval=5), checkpoint=dict(interval=max_epochs))\n".replace(
            "DATA", repr(str(cls_demo))
        )
    )
    work_dir = tmp_path / "work"
    cfg = train.build_cfg(train.parse_args([str(cfg_file), "--work-dir", str(work_dir), "--cpu"]))
    assert cfg.optim_wrapper.type == "OptimWrapper"  # AMP converted for CPU by tools/train.py

    from mmengine.runner import Runner

    runner = Runner.from_cfg(cfg)
    runner.train()
    assert runner.iter == 20 and runner.epoch == 5  # 16 images / batch 4 = 4 iterations per epoch
    ema = next(h for h in runner.hooks if type(h).__name__ == "EMAHook")
    ema_head = ema.ema_model.module.model.head.weight
    assert not torch.equal(ema_head, runner.model.model.head.weight)  # EMA tracked the weights
    logs = "\n".join(p.read_text() for p in work_dir.rglob("*.log"))
    assert "Epoch(train) [5][4/4]" in logs and "accuracy/top1" in logs
    assert (work_dir / "epoch_5.pth").is_file()
    metrics = runner.val()
    assert set(metrics) == {"accuracy/top1", "accuracy/top2"}  # mmpretrain's Accuracy, top-k up to 4 classes
    assert 0.0 <= metrics["accuracy/top1"] <= metrics["accuracy/top2"] <= 100.0
