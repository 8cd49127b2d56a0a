"""Detection: the OpenMMLab glue (registry scope, SimpleFPN, LN2d, layer decay, CPU conversion), the ViTDet Mask R-CNN
configs in mmdet, the synthetic COCO set, the Runner with CocoMetric, tools/train.py / test.py / dist_train.sh and a
downstream config outside the repository.

Everything runs on CPU with tiny inputs (96-256 px images, one image per batch, small RoI counts).
"""

from __future__ import annotations

import importlib
import json
import os
import socket
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
import torch.nn.functional as F

pytest.importorskip("mmdet")
pytestmark = [
    pytest.mark.filterwarnings("ignore:pkg_resources is deprecated:UserWarning"),
    pytest.mark.usefixtures("single_thread"),
]

from mmengine.config import Config  # noqa: E402
from mmengine.registry import init_default_scope  # noqa: E402
from mmengine.runner import Runner  # noqa: E402

import kat_backbones.mm as kat_mm  # noqa: E402
from kat_backbones.apps.demo_data.coco import DEMO_CLASSES, make_coco_demo  # noqa: E402
from kat_backbones.models.dense import KATDense  # noqa: E402
from tests.mm_utils import (  # noqa: E402, F401  (fixtures: coco_demo, single_thread)
    DET_CONFIG_DIR,
    REPO,
    coco_demo_fixture,
    shrink_det_cfg,
    single_thread_fixture,
)
from tools import get_flops, make_demo_data  # noqa: E402
from tools import test as tools_test  # noqa: E402

CONFIGS = sorted(p.name for p in DET_CONFIG_DIR.glob("*.py"))
EMBED = {"t": 192, "s": 384, "b": 768}
ARCH = {"t": "tiny", "s": "small", "b": "base"}


def load_cfg(name: str) -> Config:
    return Config.fromfile(str(DET_CONFIG_DIR / name))


def build_detector(model_cfg):
    from mmdet.registry import MODELS

    init_default_scope("mmdet")
    model = MODELS.build(model_cfg)
    model.init_weights()
    return model


def sub_env() -> dict[str, str]:
    """Environment of a tools/ subprocess: one thread per process, the repo importable, no GPU."""
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="")
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return env


# ---------------------------------------------------------------------------------------------------------------------
# glue


@pytest.mark.parametrize("scope", ["mmdet", "mmseg"])
def test_registry_scope(scope):
    """The package's modules resolve as kat_backbones.X from the toolboxes' scopes (children of mmengine's roots)."""
    from mmcv.cnn import build_norm_layer
    from mmengine.registry import MODELS, OPTIM_WRAPPER_CONSTRUCTORS

    pytest.importorskip(scope)
    init_default_scope(scope)
    assert kat_mm.registry.MODELS.scope == "kat_backbones"
    assert kat_mm.registry.MODELS.parent is MODELS
    assert kat_mm.registry.MODELS.get("KATBackbone") is kat_mm.KATBackbone
    scope_models = importlib.import_module(f"{scope}.registry").MODELS
    backbone = scope_models.build(
        dict(type="kat_backbones.KATBackbone", arch=dict(embed_dims=64, depth=2, num_heads=2), img_size=64,
             window_size=4, out_indices=(-1,), global_blocks=(1,))
    )
    assert isinstance(backbone, KATDense)
    assert scope_models.get("kat_backbones.SimpleFPN") is kat_mm.SimpleFPN
    name, norm = build_norm_layer(dict(type="kat_backbones.LN2d", eps=1e-6), 32)
    assert name == "ln" and isinstance(norm, kat_mm.LN2d) and norm.eps == 1e-6
    assert OPTIM_WRAPPER_CONSTRUCTORS.get("kat_backbones.LayerDecayOptimizerConstructor") is (
        kat_mm.LayerDecayOptimizerConstructor
    )


def test_ln2d_matches_layer_norm_over_channels():
    ln = kat_mm.LN2d(16)
    torch.nn.init.normal_(ln.weight)
    torch.nn.init.normal_(ln.bias)
    x = torch.randn(2, 16, 5, 7)
    ref = F.layer_norm(x.permute(0, 2, 3, 1), (16,), ln.weight, ln.bias, 1e-6).permute(0, 3, 1, 2)
    torch.testing.assert_close(ln(x), ref)
    # contiguous NCHW out, also for channels-last input: mmcv's RoIAlign reads NCHW memory without checking strides
    assert ln(x).is_contiguous()
    y = ln(x.contiguous(memory_format=torch.channels_last))
    assert y.is_contiguous()
    torch.testing.assert_close(y, ref)


def test_roi_features_of_the_pyramid_are_right():
    """mmdet's RoI extractor (mmcv RoIAlign) on SimpleFPN + LN2d levels equals torchvision's stride-aware roi_align.

    Regression test: with timm's LayerNorm2d output (channels-last strides) mmcv pooled the wrong memory and the
    demo's RoI heads learned nothing (docs/detection.md)."""
    import torchvision.ops as tvo
    from mmdet.registry import MODELS

    init_default_scope("mmdet")
    norm_cfg = dict(type="kat_backbones.LN2d", eps=1e-6)
    fpn = kat_mm.SimpleFPN(backbone_channel=64, out_channels=32, num_outs=5, norm_cfg=norm_cfg).eval()
    extractor = MODELS.build(dict(type="SingleRoIExtractor", roi_layer=dict(type="RoIAlign", output_size=7,
                                  sampling_ratio=0), out_channels=32, featmap_strides=[4, 8, 16, 32]))
    torch.manual_seed(0)
    for memory_format in (torch.contiguous_format, torch.channels_last):
        x = torch.randn(2, 64, 16, 16).contiguous(memory_format=memory_format)  # a 256 px image
        with torch.no_grad():
            feats = fpn(x)
            assert all(f.is_contiguous() for f in feats)
            # boxes of side 20-480 px: every level is used (mmdet: level = floor(log2(sqrt(area) / 56)))
            rois = torch.tensor([[0, 10, 12, 30, 32], [1, 40, 8, 90, 70], [0, 0, 0, 150, 130], [1, 5, 20, 250, 230],
                                 [1, 0, 0, 255, 255], [0, -100, -80, 380, 400]], dtype=torch.float32)
            levels = extractor.map_roi_levels(rois, 4)
            assert sorted(set(levels.tolist())) == [0, 1, 2, 3]
            got = extractor(feats[:4], rois)
            for i, level in enumerate(levels.tolist()):
                stride = extractor.featmap_strides[level]
                ref = tvo.roi_align(feats[level].contiguous(), rois[i:i + 1], 7, 1 / stride, 0, aligned=True)
                torch.testing.assert_close(got[i:i + 1], ref, atol=1e-5, rtol=1e-5)


def test_simple_fpn():
    norm_cfg = dict(type="kat_backbones.LN2d", eps=1e-6)
    init_default_scope("mmdet")
    fpn = kat_mm.SimpleFPN(backbone_channel=64, out_channels=32, num_outs=5, norm_cfg=norm_cfg)
    assert fpn.in_channels == [16, 32, 64, 64]
    outs = fpn((torch.randn(2, 64, 8, 12),))
    assert [tuple(o.shape) for o in outs] == [(2, 32, 32, 48), (2, 32, 16, 24), (2, 32, 8, 12), (2, 32, 4, 6),
                                             (2, 32, 2, 3)]
    assert isinstance(fpn.fpn1[1], kat_mm.LN2d) and isinstance(fpn.fpn1[2], torch.nn.GELU)
    assert isinstance(fpn.lateral_convs[0].norm, kat_mm.LN2d) and fpn.lateral_convs[0].conv.bias is None
    assert fpn(torch.randn(1, 64, 4, 4))[0].shape == (1, 32, 16, 16)  # a bare tensor works too
    with pytest.raises(ValueError, match="in_channels"):
        kat_mm.SimpleFPN(backbone_channel=64, in_channels=[64, 64, 64, 64])


def _groups_by_name(optim_wrapper) -> dict[str, dict]:
    groups = {}
    for group in optim_wrapper.optimizer.param_groups:
        for name in group["param_names"]:
            assert name not in groups, f"{name} in two groups"
            groups[name] = group
    return groups


def test_layer_decay_constructor():
    from mmcv.cnn import ConvModule
    from mmengine.registry import OPTIM_WRAPPER_CONSTRUCTORS

    init_default_scope("mmdet")

    class Detector(torch.nn.Module):
        def __init__(self):
            super().__init__()
            arch = dict(embed_dims=64, depth=4, num_heads=2)
            self.backbone = KATDense(arch, img_size=64, window_size=4, global_blocks=(1, 3), out_indices=(-1,))
            self.neck = ConvModule(64, 32, 3, norm_cfg=dict(type="kat_backbones.LN2d"))

    model = Detector()

    def build(**paramwise):
        return OPTIM_WRAPPER_CONSTRUCTORS.build(
            dict(
                type="kat_backbones.LayerDecayOptimizerConstructor",
                optim_wrapper_cfg=dict(type="OptimWrapper", optimizer=dict(type="AdamW", lr=1e-3, weight_decay=0.1)),
                paramwise_cfg=paramwise,
            )
        )(model)

    groups = _groups_by_name(build(decay_rate=0.5))  # num_layers from the backbone: 4
    assert len(groups) == sum(1 for _ in model.parameters())

    def check(name, scale, wd):
        assert groups[name]["lr"] == pytest.approx(1e-3 * scale), name
        assert groups[name]["weight_decay"] == pytest.approx(wd), name

    check("backbone.pos_embed", 0.5**5, 0.0)
    check("backbone.patch_embed.proj.weight", 0.5**5, 0.1)
    check("backbone.patch_embed.proj.bias", 0.5**5, 0.0)
    check("backbone.blocks.0.attn.qkv.weight", 0.5**4, 0.1)
    check("backbone.blocks.0.attn.qkv.bias", 0.5**4, 0.0)
    check("backbone.blocks.1.attn.rel_pos_h", 0.5**3, 0.0)
    check("backbone.blocks.2.mlp.act2.weight_numerator", 0.5**2, 0.0)
    check("backbone.blocks.2.mlp.act1.weight_denominator", 0.5**2, 0.0)
    check("backbone.blocks.3.norm1.weight", 0.5**1, 0.0)
    check("backbone.blocks.3.mlp.fc2.weight", 0.5**1, 0.1)
    check("neck.conv.weight", 1.0, 0.1)
    check("neck.ln.weight", 1.0, 0.0)

    # rational decay is configurable; custom keys multiply on top; mmseg's alias layer_decay_rate; explicit depth
    groups = _groups_by_name(
        build(layer_decay_rate=0.5, num_layers=6, rational_decay_mult=1.0, custom_keys={"neck": dict(lr_mult=0.1)})
    )
    check("backbone.blocks.2.mlp.act2.weight_numerator", 0.5**4, 0.1)
    check("backbone.pos_embed", 0.5**7, 0.0)
    check("neck.conv.weight", 0.1, 0.1)
    # a real optimizer step with these groups
    optim_wrapper = build(decay_rate=0.7)
    model.backbone(torch.randn(1, 3, 64, 64))[0].sum().backward()
    optim_wrapper.step()


def test_convert_cfg_for_cpu():
    cfg = load_cfg("kat_b_maskrcnn.py")
    assert cfg.optim_wrapper.type == "AmpOptimWrapper"
    changes = kat_mm.convert_cfg_for_cpu(cfg)
    assert cfg.optim_wrapper.type == "OptimWrapper" and "loss_scale" not in cfg.optim_wrapper
    assert cfg.optim_wrapper.constructor == "kat_backbones.LayerDecayOptimizerConstructor"
    assert cfg.env_cfg.dist_cfg.backend == "gloo"
    assert "optim_wrapper.type: AmpOptimWrapper -> OptimWrapper" in changes
    assert kat_mm.convert_cfg_for_cpu(cfg) == []  # idempotent
    # mmseg configs: SyncBN anywhere becomes BN
    seg_cfg = Config(dict(
        model=dict(decode_head=dict(norm_cfg=dict(type="SyncBN", requires_grad=True)),
                   auxiliary_head=[dict(norm_cfg=dict(type="mmseg.MMSyncBN"))]),
        optim_wrapper=dict(type="AmpOptimWrapper", loss_scale="dynamic", optimizer=dict(type="AdamW", lr=1e-4))))
    changes = kat_mm.convert_cfg_for_cpu(seg_cfg)
    assert seg_cfg.model.decode_head.norm_cfg.type == "BN"
    assert seg_cfg.model.auxiliary_head[0].norm_cfg.type == "BN"
    assert len(changes) == 3


# ---------------------------------------------------------------------------------------------------------------------
# configs and models


@pytest.mark.parametrize("name", CONFIGS)
def test_config_builds(name):
    cfg = load_cfg(name)
    assert cfg.default_scope == "mmdet"
    assert cfg.custom_imports == dict(imports=["kat_backbones"], allow_failed_imports=False)
    size = name.split("_")[1]
    backbone, neck = cfg.model.backbone, cfg.model.neck
    assert backbone.type == "kat_backbones.KATBackbone" and backbone.arch == ARCH[size]
    assert backbone.mlp_type == ("mlp" if name.startswith("vit") else "kan")
    assert neck.type == "kat_backbones.SimpleFPN" and neck.backbone_channel == EMBED[size]
    from mmdet.registry import MODELS

    init_default_scope("mmdet")
    model = MODELS.build(cfg.model)  # no init_weights: the full configs point at ImageNet checkpoints
    assert isinstance(model.backbone, kat_mm.KATBackbone) and model.backbone.embed_dims == EMBED[size]
    assert model.neck.in_channels == [EMBED[size] // 4, EMBED[size] // 2, EMBED[size], EMBED[size]]
    assert type(model.roi_head.bbox_head).__name__ == "Shared4Conv1FCBBoxHead"
    norm = kat_mm.LN2d  # ViTDet's norm in the neck and the RoI heads
    assert isinstance(model.neck.fpn1[1], norm) and isinstance(model.neck.fpn_convs[0].norm, norm)
    assert isinstance(model.roi_head.bbox_head.shared_convs[0].norm, norm)
    assert isinstance(model.roi_head.mask_head.convs[0].norm, norm)
    assert len(model.rpn_head.rpn_conv) == 2


def test_base_recipe():
    """The ViTDet LSJ-1024 recipe (mmdet projects/ViTDet) as configured in the full configs (field by field:
    tests/test_recipes.py)."""
    cfg = load_cfg("kat_b_maskrcnn.py")
    assert cfg.model.backbone.img_size == (1024, 1024) and cfg.model.backbone.drop_path_rate == 0.1
    assert cfg.model.backbone.window_size == 14 and tuple(cfg.model.backbone.global_blocks) == (2, 5, 8, 11)
    assert cfg.model.backbone.use_rel_pos and cfg.model.backbone.out_indices == (11,)
    assert cfg.model.neck.out_channels == 256 and cfg.model.neck.num_outs == 5
    train = {t.type: t for t in cfg.train_dataloader.dataset.pipeline}
    assert train["RandomResize"].scale == (1024, 1024) and train["RandomResize"].ratio_range == (0.1, 2.0)
    assert train["RandomCrop"].crop_size == (1024, 1024) and train["Pad"].size == (1024, 1024)
    assert cfg.train_dataloader.batch_size * 16 == cfg.auto_scale_lr.base_batch_size == 64
    ow = cfg.optim_wrapper
    assert ow.type == "AmpOptimWrapper" and ow.constructor == "kat_backbones.LayerDecayOptimizerConstructor"
    assert ow.optimizer == dict(type="AdamW", lr=1e-4, betas=(0.9, 0.999), weight_decay=0.1)
    assert ow.paramwise_cfg.decay_rate == 0.7 and ow.paramwise_cfg.num_layers == 12
    assert ow.paramwise_cfg.norm_decay_scope == "backbone"  # ViTDet: only backbone norms and pos_embed undecayed
    assert cfg.train_dataloader.batch_sampler is None  # every LSJ crop is 1024x1024: no aspect-ratio grouping
    assert cfg.custom_hooks == [dict(type="kat_backbones.Fp16CompressionHook")]
    assert cfg.train_cfg.type == "IterBasedTrainLoop" and cfg.train_cfg.max_iters == 184375
    warmup, steps = cfg.param_scheduler
    assert warmup.type == "LinearLR" and warmup.end == 250
    assert steps.type == "MultiStepLR" and steps.milestones == [163889, 177546]
    assert cfg.train_dataloader.dataset.data_root == "data/coco/"
    assert cfg.val_evaluator.metric == ["bbox", "segm"]


def test_maskrcnn_loss_and_predict_256():
    """kat_t Mask R-CNN with real mmcv ops (RoIAlign, nms) on packed 256x256 inputs: losses, gradients, masks."""
    from mmdet.testing import demo_mm_inputs

    cfg = shrink_det_cfg(load_cfg("kat_t_maskrcnn.py"), size=256, num_rois=64)
    model = build_detector(cfg.model).train()
    packed = demo_mm_inputs(2, [[3, 256, 256], [3, 224, 256]], num_items=[3, 2], num_classes=80, with_mask=True)
    data = model.data_preprocessor(packed, True)
    assert data["inputs"].shape == (2, 3, 256, 256)
    losses = model(**data, mode="loss")
    assert {"loss_rpn_cls", "loss_rpn_bbox", "loss_cls", "loss_bbox", "loss_mask"} <= set(losses)
    parts = [v for k, vs in losses.items() if k.startswith("loss") for v in (vs if isinstance(vs, list) else [vs])]
    total = sum(v.sum() for v in parts)
    assert torch.isfinite(total)
    total.backward()
    rational = model.backbone.blocks[0].mlp.act2.weight_denominator
    assert rational.grad is not None and rational.grad.abs().sum() > 0
    assert model.backbone.pos_embed.grad.abs().sum() > 0

    model.eval()
    with torch.no_grad():
        results = model(**model.data_preprocessor(packed, False), mode="predict")
    assert len(results) == 2
    for result, (h, w) in zip(results, [(256, 256), (224, 256)]):
        pred = result.pred_instances
        assert 0 < len(pred) <= 10 and pred.bboxes.shape[1] == 4
        assert pred.masks.shape[1:] == (h, w) and pred.masks.dtype == torch.bool


def test_downstream_config_outside_repo(tmp_path):
    """A user's config (not in this repo) that only swaps the backbone/neck of mmdet's own Mask R-CNN builds and runs
    in a fresh interpreter, with kat_backbones registered purely through custom_imports."""
    cfg_file = tmp_path / "my_kat_maskrcnn.py"
    cfg_file.write_text(textwrap.dedent("""
        _base_ = 'mmdet::mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py'
        custom_imports = dict(imports=['kat_backbones'])
        model = dict(
            backbone=dict(_delete_=True, type='kat_backbones.KATBackbone', arch='tiny', img_size=128,
                          window_size=8),
            neck=dict(_delete_=True, type='kat_backbones.SimpleFPN', backbone_channel=192, out_channels=256,
                      num_outs=5, norm_cfg=dict(type='kat_backbones.LN2d')))
    """))
    script = textwrap.dedent(f"""
        import sys, torch
        from mmengine.config import Config
        from mmengine.registry import init_default_scope
        cfg = Config.fromfile({str(cfg_file)!r})
        assert 'kat_backbones' in sys.modules
        init_default_scope('mmdet')
        from mmdet.registry import MODELS
        from mmdet.testing import demo_mm_inputs
        cfg.model.train_cfg.rcnn.sampler.num = 32
        model = MODELS.build(cfg.model)
        model.init_weights()
        packed = demo_mm_inputs(1, [[3, 128, 128]], num_classes=80, with_mask=True)
        losses = model(**model.data_preprocessor(packed, True), mode='loss')
        print(type(model.backbone).__name__, type(model.neck).__name__, sorted(losses))
    """)
    proc = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=dict(sub_env(), PYTHONPATH=""),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "KATBackbone SimpleFPN" in proc.stdout and "loss_mask" in proc.stdout


def test_get_flops_detector_config(capsys):
    """tools/get_flops.py CONFIG prints the parameters of backbone, neck, heads and the total."""
    assert get_flops.main([str(DET_CONFIG_DIR / "kat_t_maskrcnn.py"), "--shape", "128"]) == 0
    out = capsys.readouterr().out
    params = next(line for line in out.splitlines() if line.startswith("params: backbone"))
    for part in ("backbone 5.62 M", "neck 2.66 M", "rpn_head 1.18 M", "roi_head 18.26 M", "total 27.73 M"):
        assert part in params, params
    assert "GFLOPs (paper convention" in out


# ---------------------------------------------------------------------------------------------------------------------
# data, Runner and tools


def test_make_coco_demo(tmp_path):
    from PIL import Image
    from pycocotools.coco import COCO

    root = make_coco_demo(tmp_path / "a", num_train=3, num_val=2, size=(96, 128), seed=3)
    again = make_coco_demo(tmp_path / "b", num_train=3, num_val=2, size=(96, 128), seed=3)
    for rel in ("annotations/instances_train2017.json", "annotations/instances_val2017.json",
                "train2017/000000000003.jpg", "val2017/000000000001.jpg"):
        assert (root / rel).read_bytes() == (again / rel).read_bytes(), rel  # deterministic
    coco = COCO(str(root / "annotations" / "instances_train2017.json"))
    assert [c["name"] for c in coco.loadCats(coco.getCatIds())] == list(DEMO_CLASSES)
    assert len(coco.getImgIds()) == 3 and len(coco.getAnnIds()) >= 3
    for ann in coco.loadAnns(coco.getAnnIds()):
        img_info = coco.loadImgs(ann["image_id"])[0]
        assert (img_info["height"], img_info["width"]) == (96, 128)
        mask = coco.annToMask(ann)
        ys, xs = np.nonzero(mask)
        x, y, w, h = ann["bbox"]
        assert xs.min() >= np.floor(x) - 1 and xs.max() <= np.ceil(x + w) + 1
        assert ys.min() >= np.floor(y) - 1 and ys.max() <= np.ceil(y + h) + 1
        assert abs(mask.sum() - ann["area"]) <= 0.15 * ann["area"] + 20
        # the shape is drawn where its mask is: saturated pixels vs a muted background
        img = np.asarray(Image.open(root / "train2017" / img_info["file_name"]), dtype=np.float32)
        sat = img.max(-1) - img.min(-1)
        inner = mask.astype(bool) & (F.max_pool2d(torch.tensor(1.0 - mask)[None, None], 5, 1, 2)[0, 0] == 0).numpy()
        if inner.any():
            assert np.median(sat[inner]) > 100
    # the CLI dispatches per task
    assert make_demo_data.main(["--out", str(tmp_path / "c"), "--task", "coco", "--num-train", "1", "--num-val", "1",
                           "--size", "64"]) == 0
    assert len(json.loads((tmp_path / "c/coco_demo/annotations/instances_val2017.json").read_text())["images"]) == 1


def test_make_coco_demo_radius_and_class_hues(tmp_path):
    import colorsys

    from PIL import Image

    root = make_coco_demo(tmp_path, num_train=6, num_val=1, size=100, seed=1, radius=(0.2, 0.3), class_hues=True)
    ann = json.loads((root / "annotations/instances_train2017.json").read_text())
    files = {im["id"]: im["file_name"] for im in ann["images"]}
    for a in ann["annotations"]:
        _, _, w, h = a["bbox"]
        assert 0.2 * 100 * 0.9 <= max(w, h) / 2 * 1.01 and max(w, h) <= 2 * 0.3 * 100 + 1  # circumradius in range
        # the median colour inside the shape has the class hue (0, 1/3, 2/3 for ids 1, 2, 3), within the jitter
        img = np.asarray(Image.open(root / "train2017" / files[a["image_id"]]), dtype=np.float32)
        x, y, w, h = (int(round(v)) for v in a["bbox"])
        cx, cy = x + w // 2, y + h // 2
        rgb = np.median(img[cy - 2:cy + 3, cx - 2:cx + 3].reshape(-1, 3), axis=0) / 255
        hue = colorsys.rgb_to_hsv(*rgb)[0]
        want = (a["category_id"] - 1) / 3
        assert min(abs(hue - want), 1 - abs(hue - want)) < 0.09, (a["category_id"], hue)
    with pytest.raises(ValueError, match="radius must satisfy"):
        make_coco_demo(tmp_path / "bad", num_train=1, num_val=1, size=64, radius=(0.3, 0.6))


def test_demo_runner_train_eval_and_test_tool(coco_demo, tmp_path):
    """The demo config through mmengine's Runner: 20 iterations, CocoMetric bbox + segm, then tools/test.py."""
    cfg = shrink_det_cfg(load_cfg("kat_t_maskrcnn_demo.py"), coco_demo, size=128, max_iters=20, head_channels=64)
    cfg.work_dir = str(tmp_path / "work")
    kat_mm.convert_cfg_for_cpu(cfg)
    runner = Runner.from_cfg(cfg)
    runner.train()
    assert runner.iter == 20
    metrics = runner.message_hub.log_scalars
    for key in ("coco/bbox_mAP", "coco/bbox_mAP_50", "coco/segm_mAP", "coco/segm_mAP_50"):
        assert f"val/{key}" in metrics, sorted(metrics)
        assert 0.0 <= metrics[f"val/{key}"].current() <= 1.0

    # tools/test.py on the Runner's checkpoint (mmengine format, loaded with weights_only=True + allow-list)
    ckpt = tmp_path / "work" / "iter_20.pth"
    assert ckpt.is_file()
    cfg_file = tmp_path / "demo_cfg.py"
    cfg.dump(str(cfg_file))
    out = tmp_path / "preds.pkl"
    tools_test.main([str(cfg_file), str(ckpt), "--work-dir", str(tmp_path / "test_work"), "--out", str(out), "--cpu"])
    assert out.stat().st_size > 0
    logs = list((tmp_path / "test_work").glob("*/*.log"))
    assert logs and "coco/segm_mAP" in logs[0].read_text()


@pytest.mark.slow
def test_train_script_kat_b_one_iteration(coco_demo, tmp_path):
    """`python tools/train.py configs/mmdet/kat_b_maskrcnn.py` end to end (1 iteration + validation) on CPU, the
    data paths, the image size and the RoI counts shrunk on the command line."""
    size = "(128,128)"
    root = str(coco_demo)
    classes = "[" + ",".join(DEMO_CLASSES) + "]"
    options = [
        "model.backbone.init_cfg=None", f"model.backbone.img_size={size}", "model.backbone.window_size=8",
        f"model.data_preprocessor.batch_augments.0.size={size}",
        "model.train_cfg.rcnn.sampler.num=32", "model.train_cfg.rpn_proposal.max_per_img=100",
        "model.test_cfg.rpn.max_per_img=100", "model.test_cfg.rcnn.score_thr=0.0",  # predictions to evaluate
        "model.roi_head.bbox_head.num_classes=3", "model.roi_head.mask_head.num_classes=3",
        f"train_dataloader.dataset.pipeline.3.scale={size}", f"train_dataloader.dataset.pipeline.4.crop_size={size}",
        f"train_dataloader.dataset.pipeline.6.size={size}",
        f"val_dataloader.dataset.pipeline.1.scale={size}", f"val_dataloader.dataset.pipeline.2.size={size}",
        f"train_dataloader.dataset.data_root={root}", f"val_dataloader.dataset.data_root={root}",
        f"train_dataloader.dataset.metainfo.classes={classes}", f"val_dataloader.dataset.metainfo.classes={classes}",
        f"val_evaluator.ann_file={root}/annotations/instances_val2017.json",
        "train_dataloader.batch_size=1", "train_dataloader.num_workers=0", "train_dataloader.persistent_workers=False",
        "val_dataloader.num_workers=0", "val_dataloader.persistent_workers=False",
        "train_cfg.max_iters=1", "train_cfg.val_interval=1",
        "default_hooks.checkpoint.save_last=False", "default_hooks.checkpoint.interval=100",
        "default_hooks.logger.interval=1",
    ]
    cmd = [sys.executable, "tools/train.py", "configs/mmdet/kat_b_maskrcnn.py", "--work-dir", str(tmp_path),
           "--cfg-options", *options]
    proc = subprocess.run(cmd, cwd=REPO, env=sub_env(), capture_output=True, text=True, timeout=600)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-4000:]
    assert "CPU run: optim_wrapper.type: AmpOptimWrapper -> OptimWrapper" in output
    assert "Iter(train) [1/1]" in output and "coco/bbox_mAP" in output and "coco/segm_mAP" in output


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_destroy_distributed_tears_down_the_group(tmp_path):
    """tools/train.py and tools/test.py end with destroy_distributed: a no-op without a group, else it's gone."""
    import torch.distributed as dist

    assert kat_mm.destroy_distributed() is False
    store = dist.FileStore(str(tmp_path / "store"), 1)
    dist.init_process_group("gloo", store=store, rank=0, world_size=1)
    t = torch.ones(3)
    dist.all_reduce(t)
    assert kat_mm.destroy_distributed() is True
    assert not dist.is_initialized()
    assert kat_mm.destroy_distributed() is False


@pytest.mark.slow
def test_dist_train_script_two_cpu_processes(coco_demo, tmp_path):
    """tools/dist_train.sh with 2 processes on CPU: torchrun + gloo + a CPU DDP wrapper, 2 iterations + CocoMetric."""
    cfg = shrink_det_cfg(load_cfg("kat_t_maskrcnn_demo.py"), coco_demo, size=96, max_iters=2, head_channels=32)
    cfg.default_hooks.checkpoint.save_last = False
    cfg_file = tmp_path / "dist_cfg.py"
    cfg.dump(str(cfg_file))
    env = dict(sub_env(), PYTHON=sys.executable, PORT=str(_free_port()))
    cmd = ["bash", "tools/dist_train.sh", str(cfg_file), "2", "--work-dir", str(tmp_path / "work")]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-4000:]
    assert "process group: gloo, rank 0 of 2 (CPU)" in output  # rank 1 logs errors only
    assert "terminate called" not in output  # the group is destroyed before exit (kat_mm.destroy_distributed)
    assert "Iter(train) [2/2]" in output and "coco/segm_mAP" in output
