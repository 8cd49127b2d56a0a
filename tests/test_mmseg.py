"""Segmentation: the KAT backbone in mmseg (UperNet ADE20K configs), the synthetic ADE20K set, Runner and train.py.

Everything runs on CPU with tiny inputs; SyncBN in the full configs is converted to BN to build/run them here.
"""

from __future__ import annotations

import copy
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

pytest.importorskip("mmseg")
pytestmark = pytest.mark.filterwarnings("ignore:pkg_resources is deprecated:UserWarning")

from mmengine.config import Config  # noqa: E402
from mmengine.registry import init_default_scope  # noqa: E402
from mmengine.runner import Runner  # noqa: E402

from kat_backbones.apps.demo_data.ade import DEMO_CLASSES, make_ade_demo  # noqa: E402
from kat_backbones.mm import convert_cfg_for_cpu  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
CONFIG_DIR = REPO / "configs" / "mmseg"
CONFIGS = sorted(p.name for p in CONFIG_DIR.glob("*.py"))
FULL_CONFIGS = [c for c in CONFIGS if not c.endswith("_demo.py")]
EMBED_DIMS = {"t": 192, "s": 384, "b": 768}


def load_cfg(name: str) -> Config:
    return Config.fromfile(str(CONFIG_DIR / name))


def build_segmentor(model_cfg):
    from mmseg.registry import MODELS

    model_cfg = copy.deepcopy(model_cfg)
    convert_cfg_for_cpu(model_cfg)  # SyncBN -> BN, as tools/train.py does on CPU
    init_default_scope("mmseg")
    model = MODELS.build(model_cfg)
    model.init_weights()
    return model


def num_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def fake_batch(batch: int, size: int, num_classes: int, seed: int = 0) -> dict:
    """A data-preprocessor input: uint8 CHW images + SegDataSamples with random label maps (incl. ignore)."""
    from mmengine.structures import PixelData
    from mmseg.structures import SegDataSample

    g = torch.Generator().manual_seed(seed)
    inputs, samples = [], []
    for _ in range(batch):
        inputs.append(torch.randint(0, 256, (3, size, size), generator=g, dtype=torch.uint8))
        label = torch.randint(0, num_classes, (1, size, size), generator=g)
        label[:, :4] = 255
        sample = SegDataSample(metainfo=dict(img_shape=(size, size), ori_shape=(size, size), pad_shape=(size, size)))
        sample.gt_sem_seg = PixelData(data=label)
        samples.append(sample)
    return dict(inputs=inputs, data_samples=samples)


@pytest.fixture(autouse=True)
def _one_thread():
    """One intra-op thread: on a shared 2-core machine OpenMP's spinning threads made these tests ~10x slower."""
    num_threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(num_threads)


@pytest.fixture(scope="module")
def ade_demo(tmp_path_factory) -> Path:
    return make_ade_demo(tmp_path_factory.mktemp("data"), num_train=8, num_val=4, size=128, seed=0)


# --------------------------------------------------------------------------------------------------- demo data
def test_make_ade_demo_layout_and_determinism(tmp_path):
    root = make_ade_demo(tmp_path / "a", num_train=5, num_val=3, size=(64, 80), seed=3)
    assert root == tmp_path / "a" / "ade" / "ADEChallengeData2016"
    for split, prefix, n in (("training", "ADE_train", 5), ("validation", "ADE_val", 3)):
        imgs = sorted((root / "images" / split).glob("*.jpg"))
        anns = sorted((root / "annotations" / split).glob("*.png"))
        assert [p.stem for p in imgs] == [p.stem for p in anns] == [f"{prefix}_{i:08d}" for i in range(1, n + 1)]
        for img_path, ann_path in zip(imgs, anns):
            img, ann = Image.open(img_path), Image.open(ann_path)
            assert (img.mode, img.size) == ("RGB", (80, 64))
            assert (ann.mode, ann.size) == ("L", (80, 64))
            assert set(np.unique(np.asarray(ann))) <= set(range(len(DEMO_CLASSES) + 1))
    labels = np.stack([np.asarray(Image.open(p)) for p in sorted(root.glob("annotations/training/*.png"))])
    assert set(np.unique(labels)) >= set(range(1, len(DEMO_CLASSES) + 1)), "every class appears in training"

    again = make_ade_demo(tmp_path / "b", num_train=5, num_val=3, size=(64, 80), seed=3)
    other = make_ade_demo(tmp_path / "c", num_train=5, num_val=3, size=(64, 80), seed=4)
    files = sorted(p.relative_to(root) for p in root.rglob("*.*"))
    assert files == sorted(p.relative_to(again) for p in again.rglob("*.*"))
    assert all((root / f).read_bytes() == (again / f).read_bytes() for f in files)
    assert any((root / f).read_bytes() != (other / f).read_bytes() for f in files)


def test_demo_set_reads_as_ade20k(ade_demo):
    """reduce_zero_label: 0 -> 255, k -> k - 1 (150 classes); with the 5 demo classes the label map keeps 0..4."""
    from mmseg.registry import DATASETS

    init_default_scope("mmseg")
    pipeline = [dict(type="LoadImageFromFile"), dict(type="LoadAnnotations"), dict(type="PackSegInputs")]
    prefix = dict(img_path="images/validation", seg_map_path="annotations/validation")
    full = DATASETS.build(dict(type="ADE20KDataset", data_root=str(ade_demo), data_prefix=prefix, pipeline=pipeline))
    demo = DATASETS.build(
        dict(
            type="ADE20KDataset",
            data_root=str(ade_demo),
            data_prefix=prefix,
            pipeline=pipeline,
            metainfo=dict(classes=DEMO_CLASSES),
        )
    )
    assert len(full) == len(demo) == 4
    assert len(full.metainfo["classes"]) == 150 and demo.metainfo["classes"] == DEMO_CLASSES
    raw = np.asarray(Image.open(ade_demo / "annotations/validation/ADE_val_00000001.png")).astype(np.int64)
    expected = np.where(raw == 0, 255, raw - 1)
    for ds in (full, demo):
        gt = ds[0]["data_samples"].gt_sem_seg.data[0].numpy()
        np.testing.assert_array_equal(gt, expected)


# --------------------------------------------------------------------------------------------------- configs
def test_config_set_is_complete():
    expected = {f"{m}_{s}_upernet.py" for m in ("kat", "vit") for s in "tsb"} | {"kat_t_upernet_demo.py"}
    assert expected <= set(CONFIGS)


@pytest.mark.parametrize("name", CONFIGS)
def test_config_builds(name):
    cfg = load_cfg(name)
    assert "kat_backbones" in cfg.custom_imports["imports"] and not cfg.custom_imports["allow_failed_imports"]
    model_cfg = cfg.model
    bb = model_cfg.backbone
    assert bb.type == "kat_backbones.KATBackbone"
    assert bb.mlp_type == ("mlp" if name.startswith("vit") else "kan")
    dim = EMBED_DIMS[name.split("_")[1]]
    # B and the demo: mmseg's MAE-B layout (Feature2Pyramid, taps 3/5/7/11, auxiliary head on the 3rd level);
    # T/S: mmseg's DeiT-S layout (no neck, taps 2/5/8/11, auxiliary head on the 4th map). docs/recipes.md.
    mae_layout = name.split("_")[1] == "b" or name.endswith("_demo.py")
    assert tuple(bb.out_indices) == ((3, 5, 7, 11) if mae_layout else (2, 5, 8, 11))
    assert list(model_cfg.decode_head.in_channels) == [dim] * 4 and model_cfg.auxiliary_head.in_channels == dim
    if mae_layout:
        assert model_cfg.neck.embed_dim == dim and model_cfg.neck.rescales == [4, 2, 1, 0.5]
    else:
        assert model_cfg.neck is None
    assert model_cfg.decode_head.pool_scales == (1, 2, 3, 6)
    assert model_cfg.auxiliary_head.in_index == (2 if mae_layout else 3)
    assert model_cfg.auxiliary_head.loss_decode.loss_weight == 0.4
    if name in FULL_CONFIGS:
        assert model_cfg.decode_head.channels == (768 if mae_layout else 512)
        assert model_cfg.decode_head.num_classes == 150 and model_cfg.decode_head.norm_cfg.type == "SyncBN"
        assert tuple(bb.img_size) == (512, 512) and bb.window_size == 0  # global attention in every block
        assert bb.use_rel_pos == mae_layout  # MAE's blocks have relative positions, mmseg's ViT/DeiT none
        assert cfg.train_dataloader.batch_size == 2
        assert cfg.train_cfg.max_iters == (160000 if mae_layout else 80000)
        assert cfg.train_dataloader.dataset.data_root == "data/ade/ADEChallengeData2016"
        size = {"t": "tiny", "s": "small", "b": "base"}[name.split("_")[1]]
        weights = f"timm:kat_{size}_patch16_224.in1k"  # the released weights, by name
        if name.startswith("vit"):
            weights = f"timm:deit_{size}_patch16_224.fb_in1k"
        assert bb.init_cfg.type == "Pretrained" and bb.init_cfg.checkpoint == weights
        bb.init_cfg = None  # no ImageNet checkpoint in the test environment
        changes = convert_cfg_for_cpu(copy.deepcopy(cfg))  # what tools/train.py does without a GPU
        assert ("optim_wrapper.type: AmpOptimWrapper -> OptimWrapper" in changes) == mae_layout
        converted = {c.rsplit(".norm_cfg", 1)[0] for c in changes if "SyncBN -> BN" in c}
        assert {"model.decode_head", "model.auxiliary_head"} | ({"model.neck"} if mae_layout else set()) <= converted
        opt = cfg.optim_wrapper
        if mae_layout:
            assert (opt.optimizer.type, opt.optimizer.lr, opt.optimizer.weight_decay) == ("AdamW", 1e-4, 0.05)
            assert opt.paramwise_cfg.layer_decay_rate == 0.65
        else:
            assert (opt.optimizer.type, opt.optimizer.lr, opt.optimizer.weight_decay) == ("AdamW", 6e-5, 0.01)
        warmup, poly = cfg.param_scheduler
        assert (warmup.type, warmup.end, poly.type, poly.begin, poly.end) == (
            "LinearLR", 1500, "PolyLR", 1500, cfg.train_cfg.max_iters)
    else:
        assert cfg.optim_wrapper.type == "OptimWrapper" and model_cfg.decode_head.norm_cfg.type == "BN"
        assert cfg.val_evaluator.type == "IoUMetric"

    t0 = time.perf_counter()
    model = build_segmentor(model_cfg)
    n_backbone, n_total = num_params(model.backbone), num_params(model)
    print(f"{name}: backbone {n_backbone / 1e6:.2f} M, total {n_total / 1e6:.2f} M params "
          f"(built in {time.perf_counter() - t0:.1f} s)")
    assert not any(isinstance(m, torch.nn.SyncBatchNorm) for m in model.modules())
    rationals = [n for n, _ in model.backbone.named_modules() if n.endswith(("mlp.act1", "mlp.act2"))]
    assert len(rationals) == (0 if name.startswith("vit") else 24)
    if name.startswith("vit"):  # KAT = ViT + two rationals per block (38 parameters each at G=8)
        kat_cfg = load_cfg(name.replace("vit_", "kat_")).model.backbone
        kat_cfg.init_cfg = None
        init_default_scope("mmseg")
        from mmseg.registry import MODELS

        assert num_params(MODELS.build(kat_cfg)) - n_backbone == 24 * 38


@pytest.mark.parametrize(("name", "timm_name"), [("kat_t_upernet.py", "kat_tiny_swish_patch16_224"),
                                                   ("vit_t_upernet.py", "deit_tiny_patch16_224")])
def test_config_init_from_timm_checkpoint(name, timm_name, tmp_path):
    """The configs' init_cfg loads a timm ImageNet checkpoint (here randomly initialised, no download)."""
    import timm

    import kat_backbones  # noqa: F401  (registers the KAT models in timm)

    state = timm.create_model(timm_name, pretrained=False).state_dict()
    for key in state:
        if "mlp.act" in key:  # move the rationals away from their init so that loading them is visible
            state[key] = state[key] + 0.5
    ckpt = tmp_path / f"{timm_name}.pth"
    torch.save(state, ckpt)
    bb_cfg = load_cfg(name).model.backbone
    bb_cfg.init_cfg.checkpoint = str(ckpt)
    from mmseg.registry import MODELS

    init_default_scope("mmseg")
    backbone = MODELS.build(bb_cfg)
    backbone.init_weights()
    own = backbone.state_dict()
    for key in ("patch_embed.proj.weight", "blocks.0.attn.qkv.weight", "blocks.11.mlp.fc2.weight"):
        torch.testing.assert_close(own[key], state[key], rtol=0, atol=0)
    torch.testing.assert_close(own["pos_embed"], state["pos_embed"], rtol=0, atol=0)  # 224 grid + cls slot
    if name.startswith("kat"):
        torch.testing.assert_close(
            own["blocks.5.mlp.act2.weight_denominator"], state["blocks.5.mlp.act2.weight_denominator"], rtol=0, atol=0
        )


# --------------------------------------------------------------------------------------------------- forward
def test_kat_t_upernet_forward_loss_and_predict():
    cfg = load_cfg("kat_t_upernet.py")
    cfg.model.backbone.init_cfg = None
    cfg.model.data_preprocessor.size = (256, 256)
    cfg.model.decode_head.channels = 64  # slim heads: CPU test
    cfg.model.auxiliary_head.channels = 32
    model = build_segmentor(cfg.model)
    num_classes = cfg.model.decode_head.num_classes

    outputs = {}
    model.backbone.register_forward_hook(lambda m, i, o: outputs.__setitem__("backbone", o))
    assert not model.with_neck  # the DeiT-S recipe: UPerHead on the four stride-16 maps

    data = model.data_preprocessor(fake_batch(2, 256, num_classes), training=True)
    model.train()
    losses = model(**data, mode="loss")
    # four stride-16 NCHW maps from blocks (2, 5, 8, 11), straight into the heads
    assert [tuple(f.shape) for f in outputs["backbone"]] == [(2, 192, 16, 16)] * 4
    assert {"decode.loss_ce", "aux.loss_ce"} <= set(losses)
    total = sum(v for k, v in losses.items() if "loss" in k)
    assert torch.isfinite(total)
    total.backward()
    grads = [p.grad for n, p in model.backbone.named_parameters() if "mlp.act2" in n]
    assert grads and all(g is not None and torch.isfinite(g).all() for g in grads)

    model.eval()
    with torch.no_grad():
        data = model.data_preprocessor(fake_batch(1, 256, num_classes, seed=1), training=False)
        (pred,) = model(**data, mode="predict")
    assert tuple(pred.pred_sem_seg.data.shape) == (1, 256, 256)
    assert tuple(pred.seg_logits.data.shape) == (num_classes, 256, 256)
    assert int(pred.pred_sem_seg.data.max()) < num_classes


# --------------------------------------------------------------------------------------------------- Runner
def test_demo_config_runner_train_and_iou(ade_demo, tmp_path):
    cfg = load_cfg("kat_t_upernet_demo.py")
    cfg.work_dir = str(tmp_path / "work")
    for loader in ("train_dataloader", "val_dataloader", "test_dataloader"):
        cfg[loader].num_workers = 0
        cfg[loader].persistent_workers = False
        cfg[loader].dataset.data_root = str(ade_demo)
    cfg.train_dataloader.batch_size = 2
    # 64x64 crops (the demo config's are 128): same pipeline, a quarter of the pixels
    train_pipeline, val_pipeline = cfg.train_dataloader.dataset.pipeline, cfg.val_dataloader.dataset.pipeline
    assert [t.type for t in train_pipeline[2:4]] == ["RandomResize", "RandomCrop"] and val_pipeline[1].type == "Resize"
    train_pipeline[2].scale = val_pipeline[1].scale = (128, 64)
    train_pipeline[3].crop_size = cfg.model.data_preprocessor.size = (64, 64)
    cfg.train_cfg.max_iters = 20
    cfg.train_cfg.val_interval = 20
    cfg.param_scheduler[0].end = 5
    cfg.param_scheduler[1].begin, cfg.param_scheduler[1].end = 5, 20
    cfg.default_hooks.logger.interval = 5
    cfg.default_hooks.checkpoint.interval = 1000
    cfg.default_hooks.checkpoint.save_last = False

    runner = Runner.from_cfg(cfg)
    runner.train()
    assert runner.iter == 20
    assert runner.model.decode_head.num_classes == len(DEMO_CLASSES)
    metrics = runner.val()
    assert set(metrics) >= {"aAcc", "mIoU", "mAcc"}
    assert 0.0 <= metrics["mIoU"] <= 100.0 and metrics["aAcc"] > 0.0


# --------------------------------------------------------------------------------------------------- tools/train.py
@pytest.mark.slow
def test_train_script_kat_b_one_iteration(ade_demo, tmp_path):
    """`tools/train.py configs/mmseg/kat_b_upernet.py` on CPU (AMP -> fp32 and SyncBN -> BN done by train.py)."""
    cfg = load_cfg("kat_b_upernet.py")  # the pipeline indices overridden below
    assert [t.type for t in cfg.train_dataloader.dataset.pipeline[2:4]] == ["RandomResize", "RandomCrop"]
    assert cfg.val_dataloader.dataset.pipeline[1].type == "Resize"
    work_dir = tmp_path / "work"
    options = {
        "train_dataloader.dataset.data_root": str(ade_demo),
        "val_dataloader.dataset.data_root": str(ade_demo),
        "test_dataloader.dataset.data_root": str(ade_demo),
        "train_dataloader.num_workers": 0,
        "val_dataloader.num_workers": 0,
        "test_dataloader.num_workers": 0,
        "train_dataloader.persistent_workers": False,
        "val_dataloader.persistent_workers": False,
        "test_dataloader.persistent_workers": False,
        "train_dataloader.dataset.pipeline.2.scale": "(128,64)",  # RandomResize
        "train_dataloader.dataset.pipeline.3.crop_size": "(64,64)",  # RandomCrop
        "val_dataloader.dataset.pipeline.1.scale": "(128,64)",  # Resize
        "model.data_preprocessor.size": "(64,64)",
        "model.backbone.init_cfg": None,  # no ImageNet checkpoint here
        "train_cfg.max_iters": 1,
        "train_cfg.val_interval": 1,
        "default_hooks.checkpoint.save_last": False,
        "default_hooks.logger.interval": 1,
    }
    cmd = [sys.executable, str(REPO / "tools" / "train.py"), str(CONFIG_DIR / "kat_b_upernet.py"), "--cpu"]
    cmd += ["--work-dir", str(work_dir), "--cfg-options", *(f"{k}={v}" for k, v in options.items())]
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="", OMP_NUM_THREADS="1")
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    assert "CPU run: optim_wrapper.type: AmpOptimWrapper -> OptimWrapper" in proc.stdout + proc.stderr
    logs = "\n".join(p.read_text() for p in work_dir.rglob("*.log"))
    assert "Iter(train) [1/1]" in logs and "mIoU" in logs


# --------------------------------------------------------------------------------------------------- downstream
DOWNSTREAM_CFG = """
    # A user's config, outside this repository: mmseg's ViT-B UperNet with the KAT-T backbone swapped in.
    _base_ = 'mmseg::vit/vit_vit-b16_mln_upernet_8xb2-80k_ade20k-512x512.py'
    custom_imports = dict(imports=['kat_backbones'], allow_failed_imports=False)
    model = dict(
        pretrained=None,
        backbone=dict(_delete_=True, type='kat_backbones.KATBackbone', arch='tiny', img_size=512,
                      out_indices=(2, 5, 8, 11)),
        neck=dict(in_channels=[192, 192, 192, 192]))
"""


def test_downstream_config_outside_repo(tmp_path, monkeypatch):
    cfg_path = tmp_path / "my_kat_upernet.py"
    cfg_path.write_text(textwrap.dedent(DOWNSTREAM_CFG))
    monkeypatch.chdir(tmp_path)  # a user's working directory: no configs/ of this repository around
    cfg = Config.fromfile(str(cfg_path))
    assert cfg.model.decode_head.type == "UPerHead" and cfg.model.neck.type == "MultiLevelNeck"
    cfg.model.decode_head.channels = 64
    cfg.model.auxiliary_head.channels = 32
    model = build_segmentor(cfg.model)
    model.train()
    # training=False: normalise and stack without padding to the config's 512x512 crop
    data = model.data_preprocessor(fake_batch(2, 64, 150), training=False)
    losses = model.loss(data["inputs"], data["data_samples"])
    assert torch.isfinite(losses["decode.loss_ce"]) and torch.isfinite(losses["aux.loss_ce"])
    model.eval()
    with torch.no_grad():
        (pred,) = model.predict(data["inputs"][:1], data["data_samples"][:1])
    assert tuple(pred.pred_sem_seg.data.shape) == (1, 64, 64)
