"""Pictures: tools/plot_rationals.py, tools/plot_curves.py, tools/visualize.py (det / seg / cls) and
kat_backbones.apps.viz.

Everything runs on CPU with tiny inputs: a 2-epoch x 2-iteration tools/train.py run of configs/imagenet/kat_t_demo.py
at 32 px gives a real mmengine Runner checkpoint (message hub included) and scalars.json; the detection and
segmentation checkpoints are randomly initialised tiny models saved as ``{'state_dict': ..., 'meta': ...}``. Each
tool writes a PNG whose size is checked with PIL.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
from PIL import Image

import kat_backbones  # noqa: F401
from kat_backbones.apps.viz import find_rationals, init_curve, parse_index_list
from kat_backbones.checkpoint import read_checkpoint
from kat_backbones.layers import GroupRational

pytest.importorskip("mmengine")
pytestmark = [
    pytest.mark.filterwarnings("ignore:pkg_resources is deprecated:UserWarning"),
    pytest.mark.usefixtures("single_thread"),
]

from kat_backbones.apps.runlogs import load_records, run_labels, series  # noqa: E402
from tests.mm_utils import single_thread_fixture  # noqa: E402, F401  (fixture: single_thread)
from tools import plot_curves, plot_rationals, train, visualize  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
LOADERS = ("train_dataloader", "val_dataloader", "test_dataloader")


def png(path: Path) -> Image.Image:
    """Opens a PNG the tools wrote and checks it is a real, non-blank picture."""
    assert path.is_file() and path.stat().st_size > 0, path
    img = Image.open(path)
    assert img.format == "PNG"
    assert np.asarray(img.convert("L")).std() > 1.0, f"{path} is blank"
    return img


def tiny_kat(**kwargs):
    return timm.create_model("kat_tiny_swish_patch16_224", img_size=32, depth=4, num_classes=4, **kwargs)


def perturb_rationals(model, scale: float = 0.02) -> None:
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if ".act" in name:
                p.add_(scale * torch.randn(p.shape, generator=gen))


@pytest.fixture(scope="module", name="cls_run")
def cls_run_fixture(tmp_path_factory) -> dict:
    """tools/train.py on configs/imagenet/kat_t_demo.py: 4 images of 32 px, batch 2, 2 epochs (4 iterations)."""
    from kat_backbones.apps.demo_data.imagenet import make_imagenet_demo

    tmp = tmp_path_factory.mktemp("cls_run")
    root = make_imagenet_demo(tmp / "data", num_classes=4, num_train=4, num_val=4, size=32)
    work_dir = tmp / "work_dir"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        train.main([
            str(REPO / "configs" / "imagenet" / "kat_t_demo.py"), "--work-dir", str(work_dir), "--cfg-options",
            *[f"{loader}.dataset.data_root={root}" for loader in LOADERS], "model.img_size=32",
            *[f"{loader}.dataset.pipeline.0.input_size=32" for loader in LOADERS],
            "train_dataloader.batch_size=2", "val_dataloader.batch_size=2", "train_cfg.max_epochs=2",
            "train_cfg.val_interval=1", "default_hooks.logger.interval=1", "log_processor.window_size=1",
            "default_hooks.checkpoint.interval=1",
        ])
    finally:
        torch.set_num_threads(threads)
    return dict(root=root, work_dir=work_dir, checkpoint=work_dir / "epoch_2.pth", config=work_dir / "kat_t_demo.py")


# --- kat_backbones.apps.viz ------------------------------------------------------------------------------------------


def test_parse_index_list():
    assert parse_index_list("0,3,11") == [0, 3, 11]
    assert parse_index_list("0-3,8, 2") == [0, 1, 2, 3, 8]
    for bad in ("a", "3-1", "1-", "-2"):
        with pytest.raises(ValueError):
            parse_index_list(bad)


@pytest.mark.parametrize("shared_numerator", [True, False])
def test_find_rationals_matches_the_modules(shared_numerator):
    """Prefixed (mmdet-style) keys are found per block and act; their curves are the modules' own outputs."""
    model = tiny_kat(shared_numerator=shared_numerator)
    perturb_rationals(model, 0.05)
    checkpoint = {"state_dict": {f"backbone.{k}": v for k, v in model.state_dict().items()}, "meta": {}}
    entries = find_rationals(checkpoint)
    assert [(e.name, e.block, e.act) for e in entries[:3]] == [
        ("blocks.0.mlp.act1", 0, "act1"), ("blocks.0.mlp.act2", 0, "act2"), ("blocks.1.mlp.act1", 1, "act1")]
    assert len(entries) == 8 and all(e.order == (5, 4) and e.groups == 8 for e in entries)
    assert entries[0].numerator.shape[0] == (1 if shared_numerator else 8)
    x = torch.linspace(-3, 3, 61, dtype=torch.float64)
    for entry in (entries[0], entries[-1]):
        module = model.get_submodule(entry.name).double()
        assert isinstance(module, GroupRational)
        channels = x[:, None].expand(-1, 8 * 4).contiguous()  # 4 channels per group
        expected = module(channels)[:, ::4].T  # (G, len(x)): one channel of each group
        torch.testing.assert_close(entry.values(x), expected)


def test_init_curve_packaged_or_exact():
    x = torch.linspace(-3, 3, 121, dtype=torch.float64)
    y, label = init_curve("swish", (5, 4), x)
    assert label == "init: swish" and (y - torch.nn.functional.silu(x)).abs().max() < 1e-5
    y, label = init_curve("identity", (3, 2), x)
    torch.testing.assert_close(y, x)
    y, label = init_curve("gelu", (3, 2), x)  # no packaged (3, 2) gelu: the exact function, labelled so
    assert "exact" in label
    torch.testing.assert_close(y, torch.nn.functional.gelu(x))


# --- tools/plot_rationals.py -----------------------------------------------------------------------------------------


def test_plot_rationals_mmdet_style_checkpoint(tmp_path, capsys):
    model = tiny_kat()
    perturb_rationals(model)
    ckpt = tmp_path / "det_like.pth"
    torch.save({"state_dict": {f"backbone.{k}": v for k, v in model.state_dict().items()}, "meta": {}}, ckpt)
    out = tmp_path / "rationals.png"
    plot_rationals.main([str(ckpt), "--out", str(out), "--layers", "0,2-3", "--range", "-4", "4"])
    # 3 blocks x (act1, act2) = 6 panels of 2.6 x 2.1 in, one legend row (8 groups + 2 inits) and the title: 100 dpi
    assert png(out).size == (1560, 265)
    assert "6 rationals" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="no block"):
        plot_rationals.main([str(ckpt), "--out", str(out), "--layers", "7"])


def test_plot_rationals_timm_model_name(tmp_path, capsys):
    out = tmp_path / "gelu.png"
    plot_rationals.main(["kat_tiny_gelu_patch16_224", "--out", str(out), "--layers", "11"])
    assert png(out).size == (520, 325)  # 2 panels; the legend wraps to 3 entries a row (4 rows)
    assert "act2 init gelu" in capsys.readouterr().out  # read from the model's act2 modules


def test_plot_rationals_runner_checkpoint_weights_only(cls_run, tmp_path, capsys, monkeypatch):
    """A Runner checkpoint (message hub with HistoryBuffer/numpy) loads with weights_only=True and nothing else."""
    calls = []
    real_load = torch.load

    def recording_load(*args, **kwargs):
        calls.append(kwargs.get("weights_only"))
        return real_load(*args, **kwargs)

    monkeypatch.setattr(torch, "load", recording_load)
    out = tmp_path / "run.png"
    plot_rationals.main([str(cls_run["checkpoint"]), "--out", str(out), "--blocks-per-row", "4"])
    assert calls and all(w is True for w in calls)
    assert png(out).size == (2080, 685)  # 12 blocks, 4 a row: 8 x 3 panels
    assert "act2 init swish" in capsys.readouterr().out  # from the checkpoint's config (kat_tiny_swish_*)
    assert "message_hub" in read_checkpoint(cls_run["checkpoint"])


# --- tools/plot_curves.py --------------------------------------------------------------------------------------------


def write_scalars(folder: Path, records: list[dict]) -> Path:
    path = folder / "vis_data" / "scalars.json"
    path.parent.mkdir(parents=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def test_plot_curves_runs_and_resume(cls_run, tmp_path, capsys):
    # the real run: 2 epochs of 2 iterations, validation after each epoch (logged with step = epoch)
    records = load_records(cls_run["work_dir"])
    xs, ys, is_train = series(records, "loss")
    assert xs == [1.0, 2.0, 3.0, 4.0] and is_train and all(math.isfinite(y) for y in ys)
    xs, ys, is_train = series(records, "accuracy/top1")
    assert xs == [2.0, 4.0] and not is_train  # epochs 1, 2 -> their last iterations

    # a resumed iteration-based run: two timestamp folders, iteration 3 logged twice (the later value wins)
    other = tmp_path / "groups_4"
    write_scalars(other / "20260101_000000", [{"loss": 1.5, "iter": i, "step": i} for i in (1, 2, 3)])
    write_scalars(other / "20260102_000000", [{"loss": 1.0, "iter": i, "step": i} for i in (3, 4)]
                  + [{"accuracy/top1": 60.0, "step": 4}])
    xs, ys, _ = series(load_records(other), "loss")
    assert xs == [1.0, 2.0, 3.0, 4.0] and ys == [1.5, 1.5, 1.0, 1.0]
    assert series(load_records(other), "accuracy/top1")[0] == [4.0]

    out = tmp_path / "curves.png"
    plot_curves.main([str(cls_run["work_dir"]), str(other), "--out", str(out), "--smooth", "2", "--logy"])
    assert png(out).size == (960, 385)  # default keys: loss + accuracy/top1, 2 panels of 4.8 x 3.4 in + legend
    assert "['loss', 'accuracy/top1']" in capsys.readouterr().out
    assert run_labels([str(cls_run["work_dir"]), str(other)]) == ["work_dir", "groups_4"]

    scalars = next(cls_run["work_dir"].glob("*/vis_data/scalars.json"))
    out = tmp_path / "four.png"
    plot_curves.main([str(scalars), "--keys", "loss", "lr", "accuracy/top1", "accuracy/top2", "--out", str(out)])
    assert png(out).size == (1440, 725)  # 3 panels a row, 2 rows
    with pytest.raises(SystemExit, match="coco/bbox_mAP"):
        plot_curves.main([str(scalars), "--keys", "coco/bbox_mAP", "--out", str(out)])


# --- tools/visualize.py ----------------------------------------------------------------------------------------------


def test_visualize_classification(cls_run, tmp_path, capsys):
    """The run's own config dump + its Runner checkpoint; the top-5 list is drawn on a 32 px image enlarged to 320."""
    images = sorted((cls_run["root"] / "val").rglob("*.JPEG"))[:2]
    out_dir = tmp_path / "vis"
    visualize.main([str(cls_run["config"]), str(cls_run["checkpoint"]), *map(str, images),
                                 "--out-dir", str(out_dir), "--device", "cpu"])
    for image in images:
        assert png(out_dir / f"{image.stem}.png").size == (320, 320)
    assert capsys.readouterr().out.count("top-1") == 2


def _save_random_checkpoint(config: Path, scope: str, path: Path, classes: tuple[str, ...]) -> None:
    from mmengine.config import Config
    from mmengine.registry import MODELS, init_default_scope

    init_default_scope(scope)
    model = MODELS.build(Config.fromfile(config).model)
    torch.save({"state_dict": model.state_dict(), "meta": {"dataset_meta": {"classes": classes}}}, path)


def _drawn_on(out: Path, image: Path) -> None:
    drawn = np.asarray(png(out).convert("RGB"), dtype=np.float32)
    original = np.asarray(Image.open(image).convert("RGB"), dtype=np.float32)
    assert drawn.shape == original.shape  # drawn on the original image, at its size
    assert np.abs(drawn - original).mean() > 1.0  # something was drawn


DET_CONFIG = """
_base_ = '{base}'
image_size = (96, 96)
c = 32
model = dict(
    backbone=dict(arch=dict(_delete_=True, embed_dims=64, depth=4, num_heads=2), img_size=image_size, window_size=3,
                  global_blocks=(1, 3), out_indices=(3,)),
    neck=dict(backbone_channel=64, in_channels=[16, 32, 64, 64], out_channels=c),
    rpn_head=dict(in_channels=c, feat_channels=c),
    roi_head=dict(
        bbox_roi_extractor=dict(out_channels=c),
        bbox_head=dict(in_channels=c, conv_out_channels=c, fc_out_channels=4 * c),
        mask_roi_extractor=dict(out_channels=c),
        mask_head=dict(in_channels=c, conv_out_channels=c)),
    test_cfg=dict(rpn=dict(nms_pre=200, max_per_img=50), rcnn=dict(score_thr=0.0, max_per_img=5)))
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=image_size, keep_ratio=True),
    dict(type='Pad', size=image_size, pad_val=dict(img=(114, 114, 114))),
    dict(type='PackDetInputs', meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor')),
]
test_dataloader = dict(dataset=dict(pipeline=test_pipeline))
"""


def test_visualize_detection(tmp_path, capsys):
    """A random tiny KAT Mask R-CNN (the demo config, shrunk): boxes, masks and labels drawn by DetLocalVisualizer."""
    pytest.importorskip("mmdet")
    from kat_backbones.apps.demo_data.coco import DEMO_CLASSES, make_coco_demo

    root = make_coco_demo(tmp_path / "data", num_train=1, num_val=1, size=96, seed=0)
    config = tmp_path / "det_cfg.py"
    config.write_text(DET_CONFIG.format(base=REPO / "configs" / "mmdet" / "kat_t_maskrcnn_demo.py"))
    ckpt = tmp_path / "det.pth"
    _save_random_checkpoint(config, "mmdet", ckpt, DEMO_CLASSES)
    image = next((root / "val2017").glob("*.jpg"))
    out_dir = tmp_path / "vis"
    visualize.main([str(config), str(ckpt), str(image.parent), "--out-dir", str(out_dir),
                                 "--score-thr", "0", "--device", "cpu"])
    _drawn_on(out_dir / f"{image.stem}.png", image)
    assert "5 detections" in capsys.readouterr().out


SEG_CONFIG = """
_base_ = '{base}'
crop_size = (64, 64)
model = dict(
    data_preprocessor=dict(size=crop_size),
    backbone=dict(arch=dict(_delete_=True, embed_dims=32, depth=4, num_heads=2), img_size=crop_size, window_size=2,
                  global_blocks=(1, 3), out_indices=(0, 1, 2, 3)),
    neck=dict(embed_dim=32),
    decode_head=dict(in_channels=[32] * 4, channels=16),
    auxiliary_head=dict(in_channels=32, channels=8))
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=crop_size, keep_ratio=True),
    dict(type='PackSegInputs'),
]
test_dataloader = dict(dataset=dict(pipeline=test_pipeline))
"""


def test_visualize_segmentation(tmp_path, capsys):
    """A random tiny KAT UperNet (the demo config, shrunk): class colours (ADE palette) drawn by SegLocalVisualizer."""
    pytest.importorskip("mmseg")
    from kat_backbones.apps.demo_data.ade import DEMO_CLASSES, make_ade_demo

    root = make_ade_demo(tmp_path / "data", num_train=1, num_val=1, size=96)
    config = tmp_path / "seg_cfg.py"
    config.write_text(SEG_CONFIG.format(base=REPO / "configs" / "mmseg" / "kat_t_upernet_demo.py"))
    ckpt = tmp_path / "seg.pth"
    _save_random_checkpoint(config, "mmseg", ckpt, DEMO_CLASSES)
    image = next((root / "images" / "validation").glob("*.jpg"))
    out_dir = tmp_path / "vis"
    visualize.main([str(config), str(ckpt), str(image), "--out-dir", str(out_dir), "--device", "cpu"])
    _drawn_on(out_dir / f"{image.stem}.png", image)
    assert "classes:" in capsys.readouterr().out
