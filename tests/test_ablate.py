"""Ablation configs (configs/ablations: every one builds and changes what it says) and tools/ablate.py (a real run of
three classification demo configs on CPU, the summary files, resuming; log parsing)."""

from __future__ import annotations

import csv
import functools
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("mmdet")
pytest.importorskip("mmseg")
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning", "ignore::DeprecationWarning")

from mmengine.config import Config  # noqa: E402
from mmengine.registry import MODELS, init_default_scope  # noqa: E402

import kat_backbones  # noqa: E402, F401  (registers the kat_backbones scope)
from kat_backbones.apps.runlogs import collect_run_logs, primary_metric  # noqa: E402
from kat_backbones.mm import convert_cfg_for_cpu  # noqa: E402
from tools import ablate, convert_checkpoint  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
ABLATION_DIR = REPO / "configs" / "ablations"
TASKS = ("mmdet", "mmseg", "imagenet")
VARIANTS = (
    "baseline", "mixer_mlp", "groups_1", "groups_4", "groups_16", "order_3_2", "order_7_6", "act2_gelu",
    "act2_identity", "kan_init_reference", "numerator_per_group", "attn_karat_blockwise", "attn_karat_universal",
    "transfer_vit",
)
RATIONAL_WD = {"mmdet": "rational_wd_on", "mmseg": "rational_wd_on", "imagenet": "rational_wd_off"}
CONFIGS = sorted(str(p.relative_to(ABLATION_DIR)) for p in ABLATION_DIR.glob("*/*.py"))


@pytest.fixture(scope="module", autouse=True)
def _fast_config_parsing():
    """Cache mmengine's scan of a toolbox's ~200 metafiles, repeated for every ``mmdet::``/``mmseg::`` base of
    every config parsed (the scan, not the configs, dominates parsing); one intra-op thread for the small builds."""
    import mmengine.config.utils as cfg_utils

    scan = cfg_utils._get_cfg_metainfo

    @functools.cache
    def outcome(package_path: str, cfg_path: str) -> tuple[dict | None, ValueError | None]:
        try:
            return scan(package_path, cfg_path), None
        except ValueError as err:  # a `_base_/...` file: not in the metafiles (mmengine then uses the plain path)
            return None, err

    def cached_scan(package_path: str, cfg_path: str) -> dict:
        meta, err = outcome(package_path, cfg_path)
        if err is not None:
            raise err
        return meta

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(cfg_utils, "_get_cfg_metainfo", cached_scan)
        yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def transfer_checkpoint(tmp_path_factory) -> Path:
    """A random timm ViT-Ti converted to KAT-T (gelu act2) by tools/convert_checkpoint.py, as docs/ablations.md."""
    import timm

    root = tmp_path_factory.mktemp("pretrain")
    torch.manual_seed(0)
    torch.save(timm.create_model("vit_tiny_patch16_224").state_dict(), root / "vit_tiny.pth")
    dst = root / "demo_kat_tiny_gelu_from_vit.pth"
    assert convert_checkpoint.main([str(root / "vit_tiny.pth"), str(dst),
                                                 "--model", "kat_tiny_gelu_patch16_224"]) == 0
    return dst


def build(cfg: Config) -> torch.nn.Module:
    model_cfg = cfg.model.copy()
    convert_cfg_for_cpu(model_cfg)  # SyncBN -> BN (full-scale segmentation bases), as tools/train.py on CPU
    init_default_scope(cfg.get("default_scope", "mmdet"))
    return MODELS.build(model_cfg)


def blocks_of(model: torch.nn.Module):
    return model.backbone.blocks if hasattr(model, "backbone") else model.model.blocks


# --------------------------------------------------------------------------------------------------- configs
def test_ablation_set_is_complete():
    for task in TASKS:
        names = {p.stem for p in (ABLATION_DIR / task).glob("*.py")}
        assert names == {*VARIANTS, RATIONAL_WD[task]}, task


@pytest.mark.parametrize("name", CONFIGS)
def test_ablation_config_builds(name, transfer_checkpoint):
    task, variant = name[:-3].split("/")
    cfg = Config.fromfile(str(ABLATION_DIR / name))
    assert cfg.get("default_scope") == {"mmdet": "mmdet", "mmseg": "mmseg", "imagenet": "kat_backbones"}[task]
    if variant == "transfer_vit":
        if task == "imagenet":
            assert cfg.model.checkpoint == "pretrain/demo_kat_tiny_gelu_from_vit.pth"
            cfg.model.checkpoint = str(transfer_checkpoint)  # TimmClassifier loads it at construction
        else:
            assert cfg.model.backbone.init_cfg.checkpoint == "pretrain/demo_kat_tiny_gelu_from_vit.pth"
            cfg.model.backbone.init_cfg.checkpoint = str(transfer_checkpoint)
    model = build(cfg)
    blocks = blocks_of(model)
    mlp, attn = blocks[0].mlp, blocks[0].attn
    act2 = getattr(mlp, "act2", None)

    if variant == "mixer_mlp":
        assert type(mlp).__name__ == "Mlp"
    else:
        expected = dict(num_groups=8, order=(5, 4), init="swish", numerators=1)
        match = re.fullmatch(r"groups_(\d+)|order_(\d)_(\d)|act2_(\w+)", variant)
        if variant.startswith("groups_"):
            expected["num_groups"] = int(match.group(1))
        elif variant.startswith("order_"):
            expected["order"] = (int(match.group(2)), int(match.group(3)))
        elif variant.startswith("act2_") or variant == "transfer_vit":
            expected["init"] = "gelu" if variant == "transfer_vit" else match.group(4)
        elif variant == "numerator_per_group":
            expected["numerators"] = 8
        got = dict(num_groups=act2.num_groups, order=act2.order, init=act2.init,
                   numerators=act2.weight_numerator.shape[0])
        assert got == expected
        assert mlp.kan_init == ("reference" if variant == "kan_init_reference" else "variance_preserving")

    if variant.startswith("attn_karat"):
        assert attn.karat.grid == 3 and attn.karat.rank == 12
        assert (blocks[1].attn.karat is attn.karat) == (variant == "attn_karat_universal")
    else:
        assert not hasattr(attn, "karat")

    if variant.startswith("rational_wd"):
        if task == "imagenet":
            keys = cfg.optim_wrapper.paramwise_cfg.custom_keys
            assert keys[".weight_numerator"] == keys[".weight_denominator"] == dict(decay_mult=0.0)
        else:
            assert cfg.optim_wrapper.paramwise_cfg.rational_decay_mult == 1.0
    if variant == "transfer_vit":
        if task != "imagenet":
            model.backbone.init_weights()  # loads (and converts) the checkpoint
        vit = torch.load(transfer_checkpoint, weights_only=True)
        key = "blocks.0.mlp.fc1.weight"
        own = dict(model.backbone.named_parameters()) if task != "imagenet" else dict(model.model.named_parameters())
        assert torch.equal(own[key], vit[key])


@pytest.mark.parametrize("task", TASKS)
def test_ablation_at_full_scale_by_switching_base(task, tmp_path):
    """The header's full-scale ``_base_`` (e.g. 1024 px Mask R-CNN) builds with the same override."""
    text = (ABLATION_DIR / task / "attn_karat_blockwise.py").read_text()
    full = re.search(r"full scale: _base_ = '([^']+)'", text).group(1)
    demo = re.search(r"^_base_ = '([^']+)'", text, re.M).group(1)
    full_path = (ABLATION_DIR / task / full).resolve()
    assert full_path.is_file() and (ABLATION_DIR / task / demo).resolve().is_file()
    cfg_file = tmp_path / "full.py"
    cfg_file.write_text(text.replace(f"_base_ = '{demo}'", f"_base_ = {str(full_path)!r}"))
    cfg = Config.fromfile(str(cfg_file))
    if task != "imagenet":
        cfg.model.backbone.init_cfg = None
    model = build(cfg)
    karat = blocks_of(model)[0].attn.karat
    # detection: a 14 x 14 window; segmentation (mmseg's recipes): global attention over the 512 / 16 = 32 x 32 grid
    assert karat.num_tokens == {"mmdet": 14 * 14, "mmseg": 32 * 32, "imagenet": 197}[task]
    if task == "mmdet":  # global block 2: the 1024 / 16 = 64 x 64 grid
        assert blocks_of(model)[2].attn.karat.num_tokens == 64 * 64


# --------------------------------------------------------------------------------------------------- tools/ablate.py
def test_collect_run_logs(tmp_path):
    run = tmp_path / "run"
    (run / "20260101_000000" / "vis_data").mkdir(parents=True)
    records = [
        dict(lr=1e-3, loss=2.0, time=9.0, iter=1, step=1),
        dict(lr=1e-3, loss=1.5, time=1.0, iter=2, step=2),
        dict(lr=1e-3, loss=1.2, time=3.0, iter=3, step=3),
        {"coco/bbox_mAP": 0.1, "coco/segm_mAP": 0.05, "data_time": 0.1, "time": 0.5, "step": 3},
    ]
    (run / "20260101_000000" / "vis_data" / "scalars.json").write_text("\n".join(map(json.dumps, records)))
    got = collect_run_logs(run)
    assert got["metrics"] == {"coco/bbox_mAP": 0.1, "coco/segm_mAP": 0.05}
    assert got["sec_per_iter"] == pytest.approx(2.0)  # first (warm-up) record left out
    assert primary_metric(got["metrics"], None) == ("coco/bbox_mAP", 0.1)

    log_only = tmp_path / "log_only" / "20260101_000000"
    log_only.mkdir(parents=True)
    (log_only / "20260101_000000.log").write_text(
        "2026/01/01 00:00:01 - mmengine - INFO - Iter(train) [ 1/2]  lr: 1.0e-03  eta: 0:00:01  time: 4.0000  "
        "data_time: 0.0100  loss: 2.0\n"
        "2026/01/01 00:00:02 - mmengine - INFO - Iter(train) [ 2/2]  lr: 1.0e-03  eta: 0:00:00  time: 2.0000  "
        "data_time: 0.0100  loss: 1.0\n"
        "2026/01/01 00:00:03 - mmengine - INFO - Iter(val) [4/4]    aAcc: 50.0000  mIoU: 12.5000  mAcc: 20.0000  "
        "data_time: 0.0100  time: 0.2000\n"
    )
    got = collect_run_logs(tmp_path / "log_only")
    assert got["metrics"] == {"aAcc": 50.0, "mIoU": 12.5, "mAcc": 20.0}
    assert got["sec_per_iter"] == pytest.approx(2.0)
    assert ablate.run_names([Path("a/mmdet/x.py"), Path("a/mmseg/x.py")]) == ["mmdet/x", "mmseg/x"]


@pytest.fixture(scope="module")
def cls_demo_data(tmp_path_factory) -> Path:
    from kat_backbones.apps.demo_data.imagenet import make_imagenet_demo

    return make_imagenet_demo(tmp_path_factory.mktemp("data"), num_classes=4, num_train=8, num_val=4, size=32)


def test_ablate_three_demo_configs(cls_demo_data, tmp_path):
    """tools/ablate.py on three classification demo ablations (softmax, MLP mixer, KArAt), 2 iterations each."""
    configs = [str(ABLATION_DIR / "imagenet" / f"{v}.py") for v in ("baseline", "mixer_mlp", "attn_karat_blockwise")]
    data = str(cls_demo_data)
    options = [
        f"train_dataloader.dataset.data_root={data}", f"val_dataloader.dataset.data_root={data}",
        f"test_dataloader.dataset.data_root={data}", "train_dataloader.batch_size=4", "val_dataloader.batch_size=4",
        "model.img_size=32", "train_dataloader.dataset.pipeline.0.input_size=32",
        "val_dataloader.dataset.pipeline.0.input_size=32", "train_cfg.max_epochs=1", "train_cfg.val_interval=1",
        "default_hooks.logger.interval=1", "default_hooks.checkpoint.interval=1",
    ]
    work_dir = tmp_path / "ablate"
    cmd = [sys.executable, str(REPO / "tools" / "ablate.py"), *configs, "--work-dir", str(work_dir),
           "--cfg-options", *options]
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="", OMP_NUM_THREADS="1")
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "[3/3] attn_karat_blockwise: done in" in proc.stdout

    with open(work_dir / "summary.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["name"] for r in rows] == ["baseline", "mixer_mlp", "attn_karat_blockwise"]
    for row in rows:
        assert row["status"] == "done" and row["metric"] == "accuracy/top1"
        assert 0.0 <= float(row["value"]) <= float(row["accuracy/top2"]) <= 100.0
        assert float(row["sec_per_iter"]) > 0 and float(row["gflops_paper"]) > 0
    params = {r["name"]: int(r["params"]) for r in rows}
    assert params["attn_karat_blockwise"] - params["baseline"] == 12 * 3 * 12 * 5 * 7  # blocks h r N (2G + 1)
    gflops = {r["name"]: (float(r["gflops_paper"]), float(r["gflops_full"])) for r in rows}
    assert gflops["attn_karat_blockwise"][0] == pytest.approx(gflops["baseline"][0])  # paper convention: no attention
    assert gflops["attn_karat_blockwise"][1] > gflops["baseline"][1]  # full count: + the operator
    md = (work_dir / "summary.md").read_text()
    assert md.startswith("| run | status | metric |") and md.count("\n| `") == 3
    for name in ("baseline", "mixer_mlp", "attn_karat_blockwise"):
        assert (work_dir / name / "ablate_result.json").is_file()

    # resumable: finished runs are skipped, the summary is rewritten from their results
    (work_dir / "summary.md").unlink()
    again = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert again.returncode == 0, again.stderr[-3000:]
    assert again.stdout.count("done before, skipped") == 3
    assert (work_dir / "summary.md").read_text() == md


def test_ablate_commands_failures_and_resume_flag(tmp_path, monkeypatch, capsys):
    """Without training: the dist command, a failed run (reported, no result file, exit 1), --resume after a stop."""
    configs = [str(ABLATION_DIR / "mmseg" / "baseline.py"), str(ABLATION_DIR / "mmseg" / "groups_4.py")]
    work_dir = tmp_path / "ablate"
    (work_dir / "groups_4").mkdir(parents=True)
    (work_dir / "groups_4" / "last_checkpoint").write_text("iter_10.pth")  # an interrupted run

    assert ablate.main([*configs, "--work-dir", str(work_dir), "--launcher", "pytorch", "--gpus", "2",
                        "--dry-run", "--cfg-options", "train_cfg.max_iters=4"]) == 0
    out = capsys.readouterr().out
    assert "tools/dist_train.sh " + configs[0] + " 2 --work-dir" in out
    assert "--resume --cfg-options train_cfg.max_iters=4" in out  # groups_4 continues from its checkpoint

    calls = []

    def fake_run(cmd, log_path, label, interactive):
        calls.append(cmd)
        return (0 if "baseline" in cmd[2] else 3), 1.5

    monkeypatch.setattr(ablate, "run_one", fake_run)
    monkeypatch.setattr(ablate, "collect_run_logs", lambda run_dir: dict(metrics={"mIoU": 10.0}, sec_per_iter=0.5))
    assert ablate.main([*configs, "--work-dir", str(work_dir), "--no-flops"]) == 1
    out = capsys.readouterr().out
    assert "[2/2] groups_4: FAILED (exit code 3)" in out and len(calls) == 2
    assert (work_dir / "baseline" / "ablate_result.json").is_file()
    assert not (work_dir / "groups_4" / "ablate_result.json").exists()  # retried next time
    with open(work_dir / "summary.csv") as f:
        assert [(r["name"], r["status"], r["value"]) for r in csv.DictReader(f)] == [
            ("baseline", "done", "10.0"), ("groups_4", "failed", "")]

    calls.clear()
    assert ablate.main([*configs, "--work-dir", str(work_dir), "--no-flops"]) == 1  # groups_4 fails again
    assert len(calls) == 1 and "groups_4" in calls[0][2]
