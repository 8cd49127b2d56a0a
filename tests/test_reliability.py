"""Reliability (docs/reliability.md): safe checkpoint loading under torch >= 2.6, exact resume after SIGKILL,
determinism, 2-process CPU training (DDP over gloo), build-time validation of bad configs, non-finite losses.

Everything runs on CPU at 32-128 px with a handful of images and 2-6 iterations, one intra-op thread per process.
"""

from __future__ import annotations

import os
import pickle
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import timm
import torch

pytest.importorskip("mmdet")
pytest.importorskip("mmseg")
pytestmark = [
    pytest.mark.filterwarnings("ignore:pkg_resources is deprecated:UserWarning"),
    pytest.mark.usefixtures("single_thread"),
]

from mmengine.config import Config  # noqa: E402
from mmengine.runner import Runner  # noqa: E402
from mmengine.runner.checkpoint import _load_checkpoint  # noqa: E402

import kat_backbones.mm as kat_mm  # noqa: E402
from kat_backbones.apps.demo_data.ade import make_ade_demo  # noqa: E402
from kat_backbones.apps.demo_data.imagenet import make_imagenet_demo  # noqa: E402
from kat_backbones.checkpoint import (  # noqa: E402
    CorruptCheckpointError,
    UnsafeCheckpointError,
    read_checkpoint,  # noqa: E402
)
from kat_backbones.mm.checkpoint import install_safe_checkpoint_loading, load_from_local_safe  # noqa: E402
from kat_backbones.mm.hooks import NONFINITE_LOSS_EXIT_CODE, NonFiniteLossHook  # noqa: E402
from kat_backbones.models.dense import KATDense  # noqa: E402
from kat_backbones.ops import group_rational  # noqa: E402
from tests.conftest import DEVICES  # noqa: E402
from tests.mm_utils import (  # noqa: E402, F401  (fixtures: coco_demo, single_thread)
    DET_CONFIG_DIR,
    REPO,
    coco_demo_fixture,
    shrink_det_cfg,
    single_thread_fixture,
)
from tools import test as tools_test  # noqa: E402
from tools import train  # noqa: E402

CLS_DEMO = REPO / "configs" / "imagenet" / "kat_t_demo.py"
SEG_DEMO = REPO / "configs" / "mmseg" / "kat_t_upernet_demo.py"

#: What a genuine mmengine 0.10.7 Runner checkpoint references beyond torch's default weights-only globals.
_NP_CORE = "numpy._core" if int(np.__version__.split(".")[0]) >= 2 else "numpy.core"
MMENGINE_GLOBALS = {
    "mmengine.logging.history_buffer.HistoryBuffer",
    f"{_NP_CORE}.multiarray._reconstruct",
    f"{_NP_CORE}.multiarray.scalar",
    "numpy.ndarray",
    "numpy.dtype",
    "builtins.getattr",
}


def sub_env(**extra: str) -> dict[str, str]:
    """Environment of a tools/ subprocess: one thread per process, the repo importable, no GPU."""
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="", **extra)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return env


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_cls_config(
    path: Path, data_root: Path, max_epochs: int, val_interval: int = 1, seed: int = 0, keep: int = 1
) -> Path:
    """The classification demo config scaled down: KAT-T with 2 blocks at 32 px, 8 images in batches of 4 (2
    iterations per epoch), the demo's random augmentations (RandAugment, random erasing, mixup/cutmix, drop path),
    a checkpoint at every epoch end, seeded and deterministic."""
    path.write_text(
        textwrap.dedent(f"""
        _base_ = {str(CLS_DEMO)!r}
        data_root = {str(data_root)!r}
        img_size = 32
        max_epochs = {max_epochs}
        model = dict(img_size=img_size, depth=2)
        train_dataloader = dict(batch_size=4, dataset=dict(data_root=data_root, pipeline=[dict(
            type='kat_backbones.TimmTransform', input_size=img_size, is_training=True,
            auto_augment='rand-m5-mstd0.5-inc1', interpolation='bicubic', re_prob=0.25, re_mode='pixel',
            re_count=1)]))
        val_dataloader = dict(batch_size=4, dataset=dict(data_root=data_root, pipeline=[dict(
            type='kat_backbones.TimmTransform', input_size=img_size, interpolation='bicubic', crop_pct=0.875)]))
        test_dataloader = val_dataloader
        param_scheduler = [dict(type='LinearLR', start_factor=0.1, by_epoch=True, begin=0, end=max_epochs,
                                convert_to_iter_based=True)]
        train_cfg = dict(max_epochs=max_epochs, val_interval={val_interval})
        default_hooks = dict(logger=dict(interval=1), checkpoint=dict(interval=1, max_keep_ckpts={keep}))
        randomness = dict(seed={seed}, deterministic=True)
        """)
    )
    return path


def loss_history(runner: Runner, prefix: str = "train/loss") -> dict[str, list[float]]:
    scalars = runner.message_hub.log_scalars
    return {k: scalars[k].data[0].tolist() for k in sorted(scalars) if k.startswith(prefix)}


def assert_same_state(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


@pytest.fixture(scope="module", name="cls_data")
def cls_data_fixture(tmp_path_factory) -> Path:
    """4 classes, 8 training / 4 validation images of 32 px."""
    return make_imagenet_demo(tmp_path_factory.mktemp("cls"), num_classes=4, num_train=8, num_val=4, size=32)


@pytest.fixture(name="deterministic")
def deterministic_fixture():
    """``torch.use_deterministic_algorithms(True)`` for one test (mmengine's ``deterministic=True`` only sets the
    cuDNN flags); restores every flag afterwards."""
    saved = (
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
        torch.backends.cudnn.deterministic,
        torch.backends.cudnn.benchmark,
    )
    torch.use_deterministic_algorithms(True)
    yield
    torch.use_deterministic_algorithms(saved[0], warn_only=saved[1])
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = saved[2:]


@pytest.fixture(scope="module", name="cls_checkpoint")
def cls_checkpoint_fixture(cls_data, tmp_path_factory) -> tuple[Path, Path]:
    """A genuine mmengine Runner checkpoint: tools/train.py on the tiny classification demo for one epoch."""
    work = tmp_path_factory.mktemp("cls_ckpt")
    cfg_file = write_cls_config(work / "rel_ckpt_cfg.py", cls_data, max_epochs=1)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        train.main([str(cfg_file), "--work-dir", str(work / "run"), "--cpu"])
    finally:
        torch.set_num_threads(threads)
    return cfg_file, work / "run" / "epoch_1.pth"


# ---------------------------------------------------------------------------------------------------------------------
# 1. checkpoints under torch >= 2.6: weights_only with an allow-list


def test_runner_checkpoint_globals_are_exactly_the_allow_list(cls_checkpoint):
    """A Runner checkpoint needs exactly these globals; without the allow-list torch's default load refuses it,
    with it ``torch.load(weights_only=True)`` reads it (no weights_only=False anywhere)."""
    _, ckpt = cls_checkpoint
    assert torch.serialization.get_unsafe_globals_in_checkpoint(str(ckpt)) == []  # all allow-listed at import
    saved = torch.serialization.get_safe_globals()
    torch.serialization.clear_safe_globals()
    try:
        assert set(torch.serialization.get_unsafe_globals_in_checkpoint(str(ckpt))) == MMENGINE_GLOBALS
        with pytest.raises(pickle.UnpicklingError, match="HistoryBuffer|numpy|getattr"):
            torch.load(ckpt)  # torch >= 2.6 default: weights_only=True
    finally:
        torch.serialization.add_safe_globals(saved)
        install_safe_checkpoint_loading()
    checkpoint = torch.load(ckpt, weights_only=True)
    assert {"meta", "state_dict", "message_hub", "optimizer", "param_schedulers", "rng_state"} <= set(checkpoint)
    assert checkpoint["meta"]["epoch"] == 1 and checkpoint["meta"]["iter"] == 2
    history = checkpoint["message_hub"]["log_scalars"]["train/loss"]
    assert len(history.data[0]) == 2 and history.mean() == history.statistics("mean")  # methods work after loading
    assert read_checkpoint(ckpt)["state_dict"].keys() == checkpoint["state_dict"].keys()


def test_test_tool_loads_runner_checkpoint(cls_checkpoint, tmp_path):
    """tools/test.py CONFIG CHECKPOINT (mmengine's load_from path) on a genuine Runner checkpoint."""
    from mmengine.runner.checkpoint import CheckpointLoader

    cfg_file, ckpt = cls_checkpoint
    assert CheckpointLoader._get_checkpoint_loader(str(ckpt)) is load_from_local_safe
    tools_test.main([str(cfg_file), str(ckpt), "--work-dir", str(tmp_path), "--cpu"])
    logs = "\n".join(p.read_text() for p in tmp_path.rglob("*.log"))
    assert f"Load checkpoint from {ckpt}" in logs and "accuracy/top1" in logs


class _Payload:
    """Unpickles into ``func(*args)``: what a malicious checkpoint carries."""

    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


@pytest.mark.parametrize(
    ("func", "shown"),
    [(os.system, "posix.system"), (shutil.rmtree, "shutil.rmtree"), (getattr, "builtins.getattr")],
    ids=["os.system", "shutil.rmtree", "getattr"],
)
def test_checkpoint_with_pickled_callable_is_refused(tmp_path, func, shown):
    """A callable that is not on the allow-list is refused before it runs, through mmengine's loader (what
    ``--resume``, ``load_from`` and tools/test.py use), with the file, the global and the way forward named."""
    from mmengine.logging import HistoryBuffer

    victim = tmp_path / "victim"
    victim.mkdir()
    args = {
        "posix.system": (f"rm -r {victim}",),
        "shutil.rmtree": (str(victim),),
        "builtins.getattr": (HistoryBuffer, "update"),  # getattr is allowed for HistoryBuffer's statistics only
    }[shown]
    path = tmp_path / "evil.pth"
    torch.save({"state_dict": {"w": torch.zeros(2)}, "meta": _Payload(func, *args)}, path)
    with pytest.raises(UnsafeCheckpointError) as info:
        _load_checkpoint(str(path), map_location="cpu")
    message = str(info.value)
    assert str(path) in message and shown in message and info.value.global_name == shown
    assert "add_safe_globals" in message and "trust" in message
    assert victim.is_dir()  # the payload never ran


def test_truncated_checkpoint_is_reported(cls_checkpoint, tmp_path):
    """A checkpoint cut short (a run killed while saving) names the file and the previous-checkpoint remedy."""
    _, ckpt = cls_checkpoint
    data = ckpt.read_bytes()
    cut = tmp_path / "epoch_2.pth"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(CorruptCheckpointError, match="truncated.*last_checkpoint"):
        _load_checkpoint(str(cut), map_location="cpu")


# ---------------------------------------------------------------------------------------------------------------------
# 2. exact resume after SIGKILL


def test_sigkill_then_resume_matches_uninterrupted_run(cls_data, tmp_path):
    """tools/train.py killed with SIGKILL after its first checkpoint and restarted with ``--resume`` ends with the
    same weights, optimizer state and per-iteration losses as an uninterrupted run (3 epochs x 2 iterations,
    validation after each epoch, random augmentations, mixup and drop path on).

    Exact because: EpochBasedTrainLoop + DefaultSampler (each epoch's order seeded by seed + epoch), checkpoints at
    epoch ends, kat_backbones.RNGStateHook (random states in the checkpoint; validation doesn't consume them). The
    same resume without the hook (``--no-reliability-hooks``) diverges: the check can fail."""
    cfg_file = write_cls_config(tmp_path / "rel_resume_cfg.py", cls_data, max_epochs=3, keep=-1)
    ref_dir, run_dir, nohook_dir = tmp_path / "ref", tmp_path / "run", tmp_path / "nohook"

    logs = []

    def train(work_dir: Path, *extra: str) -> subprocess.Popen:
        cmd = [sys.executable, "tools/train.py", str(cfg_file), "--work-dir", str(work_dir), *extra]
        logs.append(open(tmp_path / f"{work_dir.name}{len(extra)}.out", "w"))  # noqa: SIM115  (closed below)
        return subprocess.Popen(cmd, cwd=REPO, env=sub_env(), stdout=logs[-1], stderr=subprocess.STDOUT)

    ref = train(ref_dir)
    run = train(run_dir)
    deadline, last = time.monotonic() + 300, run_dir / "last_checkpoint"
    while not (last.exists() and last.read_text().strip().endswith(".pth")):  # written once a checkpoint is complete
        assert run.poll() is None, (tmp_path / "run0.out").read_text()[-3000:]
        assert time.monotonic() < deadline
        time.sleep(0.01)
    run.send_signal(signal.SIGKILL)
    assert run.wait() == -signal.SIGKILL
    killed_at = Path(last.read_text().strip()).name
    assert killed_at in ("epoch_1.pth", "epoch_2.pth") and not (run_dir / "epoch_3.pth").exists()
    nohook_dir.mkdir()
    shutil.copy(run_dir / killed_at, nohook_dir / killed_at)

    resumed = train(run_dir, "--resume")
    nohook = train(nohook_dir, "--resume", str(nohook_dir / killed_at), "--no-reliability-hooks")
    assert resumed.wait(timeout=300) == 0, (tmp_path / "run1.out").read_text()[-3000:]
    assert ref.wait(timeout=300) == 0, (tmp_path / "ref0.out").read_text()[-3000:]
    assert nohook.wait(timeout=300) == 0, (tmp_path / "nohook3.out").read_text()[-3000:]
    for log in logs:
        log.close()
    out = (tmp_path / "run1.out").read_text()
    assert f"resumed epoch: {killed_at[6]}" in out and "RNGStateHook: random states restored" in out

    a, b = read_checkpoint(ref_dir / "epoch_3.pth"), read_checkpoint(run_dir / "epoch_3.pth")
    assert a["meta"]["iter"] == b["meta"]["iter"] == 6
    assert_same_state(a["state_dict"], b["state_dict"])
    for pa, pb in zip(a["optimizer"]["state"].values(), b["optimizer"]["state"].values()):
        assert_same_state(pa, pb)
    losses = [c["message_hub"]["log_scalars"]["train/loss"].data[0].tolist() for c in (a, b)]
    assert len(losses[0]) == 6 and losses[0] == losses[1]

    c = read_checkpoint(nohook_dir / "epoch_3.pth")  # mmengine alone: re-seeded random streams after the resume
    assert c["message_hub"]["log_scalars"]["train/loss"].data[0].tolist() != losses[0]
    assert not torch.equal(c["state_dict"]["model.head.weight"], a["state_dict"]["model.head.weight"])


def test_mid_epoch_checkpoint_resume_is_flagged(cls_checkpoint, tmp_path):
    """A checkpoint taken mid-epoch can't resume exactly with EpochBasedTrainLoop (it restarts the epoch): logged."""
    cfg_file, ckpt = cls_checkpoint
    checkpoint = read_checkpoint(ckpt)
    checkpoint["meta"]["iter"] = 1  # as if saved after the first of the epoch's 2 iterations
    mid = tmp_path / "iter_1.pth"
    torch.save(checkpoint, mid)
    work = tmp_path / "work"
    train.main([str(cfg_file), "--work-dir", str(work), "--cpu", "--resume", str(mid)])
    log = "\n".join(p.read_text() for p in work.rglob("*.log"))
    assert "the checkpoint was taken mid-epoch (iteration 1, 2 per epoch)" in log


# ---------------------------------------------------------------------------------------------------------------------
# 3. determinism


def _run_cls(cfg_file: Path, work_dir: Path, name: str) -> Runner:
    cfg = train.build_cfg(train.parse_args([str(cfg_file), "--work-dir", str(work_dir), "--cpu"]))
    cfg.experiment_name = name
    cfg.val_dataloader = cfg.val_cfg = cfg.val_evaluator = None
    cfg.default_hooks.checkpoint = dict(type="CheckpointHook", interval=100, save_last=False)
    runner = Runner.from_cfg(cfg)
    runner.train()
    return runner


def test_cls_demo_same_seed_same_losses(cls_data, tmp_path, deterministic):
    """Same seed twice: identical per-iteration losses and weights (with torch.use_deterministic_algorithms); another
    seed differs (the check can fail)."""
    runs = []
    for i, seed in enumerate((0, 0, 1)):
        cfg_file = write_cls_config(tmp_path / f"rel_det_cls_{i}.py", cls_data, max_epochs=1, seed=seed)
        runs.append(_run_cls(cfg_file, tmp_path / f"w{i}", f"rel_det_cls_{i}"))
    (first, again, other) = [loss_history(r)["train/loss"] for r in runs]
    assert len(first) == 2 and first == again and first != other
    assert_same_state(runs[0].model.state_dict(), runs[1].model.state_dict())


def test_det_demo_same_seed_same_losses(coco_demo, tmp_path, deterministic):
    """The detection demo (Mask R-CNN, 3 iterations at 96 px) twice with the same seed: identical losses of every
    head and identical weights."""
    histories, states = [], []
    for i in range(2):
        cfg = shrink_det_cfg(Config.fromfile(str(DET_CONFIG_DIR / "kat_t_maskrcnn_demo.py")), coco_demo, size=96,
                             max_iters=3, head_channels=32)
        kat_mm.convert_cfg_for_cpu(cfg)
        cfg.work_dir, cfg.experiment_name = str(tmp_path / f"w{i}"), f"rel_det_det_{i}"
        cfg.randomness = dict(seed=0, deterministic=True)
        cfg.val_dataloader = cfg.val_cfg = cfg.val_evaluator = None
        cfg.default_hooks.checkpoint.update(interval=100, save_last=False)
        runner = Runner.from_cfg(cfg)
        runner.train()
        histories.append(loss_history(runner, prefix="train/loss"))
        states.append(runner.model.state_dict())
    assert {"train/loss", "train/loss_rpn_cls", "train/loss_bbox", "train/loss_mask"} <= set(histories[0])
    assert all(len(v) == 3 for v in histories[0].values())
    assert histories[0] == histories[1]
    assert_same_state(*states)


@pytest.mark.parametrize("device", DEVICES)
def test_op_under_deterministic_algorithms(device, deterministic):
    """The group-rational op (forward + backward, all inputs) runs under ``torch.use_deterministic_algorithms(True)``
    and is bitwise reproducible, across thread counts on CPU."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(4, 50, 64, generator=g).to(device).requires_grad_()
    num = (torch.randn(1, 6, generator=g) * 0.3).to(device).requires_grad_()
    den = (torch.randn(8, 4, generator=g) * 0.3).to(device).requires_grad_()
    gy = torch.randn(x.shape, generator=g).to(device)
    threads = torch.get_num_threads()
    results = []
    for n in (1, 2, 1):
        torch.set_num_threads(n)
        try:
            y = group_rational(x, num, den)
            results.append((y, *torch.autograd.grad(y, (x, num, den), gy)))
        finally:
            torch.set_num_threads(threads)
    for other in results[1:]:
        assert all(torch.equal(a, b) for a, b in zip(results[0], other))


def test_kat_train_step_under_deterministic_algorithms(deterministic):
    """A KAT train step (timm model, GR-KAN layers, AdamW) under ``torch.use_deterministic_algorithms(True)`` on CPU."""
    states = []
    for _ in range(2):
        torch.manual_seed(0)
        model = timm.create_model("kat_tiny_swish_patch16_224", img_size=32, depth=2, num_classes=4,
                                  drop_path_rate=0.1)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
        for _ in range(2):
            loss = torch.nn.functional.cross_entropy(model(torch.randn(4, 3, 32, 32)), torch.tensor([0, 1, 2, 3]))
            opt.zero_grad()
            loss.backward()
            opt.step()
        states.append(model.state_dict())
    assert_same_state(*states)


# ---------------------------------------------------------------------------------------------------------------------
# 4. distributed: tools/dist_train.sh with 2 CPU processes (torchrun + gloo)


def _dist_train(cfg_file: Path, work_dir: Path, *options: str) -> str:
    cmd = ["bash", "tools/dist_train.sh", str(cfg_file), "2", "--work-dir", str(work_dir), *options]
    env = sub_env(PYTHON=sys.executable, PORT=str(free_port()))
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-4000:]
    return output


@pytest.mark.slow
def test_dist_train_detection_demo_two_processes(coco_demo, tmp_path):
    """The detection demo on 2 CPU processes, 2 iterations + CocoMetric; an nccl backend in the config is switched to
    gloo by tools/train.py."""
    cfg = shrink_det_cfg(Config.fromfile(str(DET_CONFIG_DIR / "kat_t_maskrcnn_demo.py")), coco_demo, size=64,
                         max_iters=2, head_channels=32)
    cfg_file = tmp_path / "rel_dist_det.py"
    cfg.dump(str(cfg_file))
    output = _dist_train(cfg_file, tmp_path / "work", "--cfg-options", "env_cfg.dist_cfg.backend=nccl")
    assert "env_cfg.dist_cfg.backend: nccl -> gloo" in output
    assert "process group: gloo, rank 0 of 2 (CPU)" in output
    assert "Iter(train) [2/2]" in output and "coco/bbox_mAP" in output and "coco/segm_mAP" in output
    assert (tmp_path / "work" / "iter_2.pth").is_file()


@pytest.mark.slow
def test_dist_train_segmentation_demo_two_processes(tmp_path):
    """The segmentation demo on 2 CPU processes: 2 iterations (batch 2 per process) + IoUMetric on the validation
    images split over both processes."""
    data = make_ade_demo(tmp_path / "data", num_train=4, num_val=2, size=128, seed=0)
    cfg = Config.fromfile(str(SEG_DEMO))
    for loader in ("train_dataloader", "val_dataloader", "test_dataloader"):
        cfg[loader].update(num_workers=0, persistent_workers=False)
        cfg[loader].dataset.data_root = str(data)
    cfg.train_dataloader.batch_size = 2
    cfg.train_cfg.update(max_iters=2, val_interval=2)
    cfg.param_scheduler = [dict(type="LinearLR", start_factor=0.1, by_epoch=False, begin=0, end=2)]
    cfg.default_hooks.logger.interval = 1
    cfg.default_hooks.checkpoint.interval = 2
    cfg_file = tmp_path / "rel_dist_seg.py"
    cfg.dump(str(cfg_file))
    output = _dist_train(cfg_file, tmp_path / "work")
    assert "process group: gloo, rank 0 of 2 (CPU)" in output
    assert "Iter(train) [2/2]" in output and "mIoU" in output
    assert (tmp_path / "work" / "iter_2.pth").is_file()


# ---------------------------------------------------------------------------------------------------------------------
# 5. bad configs fail at build time


BAD_DENSE_ARGS = [
    pytest.param(dict(arch="huge"), "arch must be one of", id="unknown-arch"),
    pytest.param(dict(out_indices=(12,)), r"out_indices \(12,\) out of range for depth 12", id="out-indices"),
    pytest.param(dict(global_blocks=(2, 14)), r"global_blocks \(2, 14\) out of range", id="global-blocks"),
    pytest.param(dict(img_size=100), r"img_size \(100, 100\) must be divisible by patch_size=16", id="img-size"),
    pytest.param(dict(kan_cfg=dict(num_groups=5)), "num_groups=5 must divide in_features=192", id="groups"),
    pytest.param(dict(window_size=-1), "window_size must be >= 0", id="window-negative"),
    pytest.param(dict(attn_type="fourier_karat", attn_cfg=dict(mode="shared")), "mode must be 'blockwise' or "
                 "'universal'", id="karat-mode"),
]


@pytest.mark.parametrize("builder", ["KATDense", "registry"])
@pytest.mark.parametrize(("kwargs", "message"), BAD_DENSE_ARGS)
def test_bad_dense_backbone_args_fail_at_build(builder, kwargs, message):
    """KATDense and the registered ``kat_backbones.KATBackbone`` (built from an mmdet config dict) reject each bad
    argument with a message naming it."""
    args = {"arch": "tiny", "img_size": 224, **kwargs}
    with pytest.raises(ValueError, match=message):
        if builder == "KATDense":
            KATDense(**args)
        else:
            from mmdet.registry import MODELS
            from mmengine.registry import init_default_scope

            init_default_scope("mmdet")
            MODELS.build(dict(type="kat_backbones.KATBackbone", **args))


def test_window_larger_than_grid_fails_at_build_time():
    """A window larger than the token grid is refused at build time with the grid and the largest valid size."""
    with pytest.raises(ValueError, match=r"window_size=14 is larger than the token grid \(4, 4\).*window_size <= 4"):
        KATDense("tiny", img_size=64, window_size=14)


BAD_TIMM_ARGS = [
    pytest.param(dict(img_size=100), "img_size 100 must be divisible by patch_size 16", id="img-size"),
    pytest.param(dict(num_groups=5), "num_groups=5 must divide in_features=192", id="groups"),
    pytest.param(dict(attn_type="fourier_karat", dynamic_img_size=True), "needs a fixed token count",
                 id="karat-no-fixed-tokens"),
]


@pytest.mark.parametrize(("kwargs", "message"), BAD_TIMM_ARGS)
def test_bad_timm_kat_args_fail_at_build(kwargs, message):
    """The timm KAT models: image size vs patch size, groups vs width, Fourier-KArAt without a fixed token count."""
    with pytest.raises(ValueError, match=message):
        timm.create_model("kat_tiny_patch16_224", depth=1, **kwargs)


# ---------------------------------------------------------------------------------------------------------------------
# 6. non-finite losses


def test_nonfinite_loss_stops_training(cls_data, tmp_path, monkeypatch):
    """A NaN loss at iteration 3 (injected into the classifier's loss) is reported with its iteration and stops
    tools/train.py with exit status 3; the last checkpoint (epoch 1) is intact, no later one is written."""
    from kat_backbones.mm.cls import TimmClassifier

    calls = []
    original = TimmClassifier.loss

    def loss_with_nan(self, *args, **kwargs):
        losses = original(self, *args, **kwargs)
        calls.append(1)
        if len(calls) == 3:
            losses["loss"] = losses["loss"] * float("nan")
        return losses

    monkeypatch.setattr(TimmClassifier, "loss", loss_with_nan)
    cfg_file = write_cls_config(tmp_path / "rel_nan_cfg.py", cls_data, max_epochs=3, val_interval=10)
    work = tmp_path / "work"
    with pytest.raises(SystemExit) as info:
        train.main([str(cfg_file), "--work-dir", str(work), "--cpu"])
    assert info.value.code == NONFINITE_LOSS_EXIT_CODE
    log = "\n".join(p.read_text() for p in work.rglob("*.log"))
    assert "non-finite loss loss=nan at iteration 3 (epoch 2, batch 1)" in log
    assert "Epoch(train) [2][1/2]" not in log  # stopped before the logger recorded iteration 3
    assert sorted(p.name for p in work.glob("*.pth")) == ["epoch_1.pth"]
    state = read_checkpoint(work / "epoch_1.pth")["state_dict"]
    assert all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point())


def test_nonfinite_loss_hook_keys():
    """The hook checks the loss entries only (or the given keys), and accepts floats and tensors."""

    class _Runner:
        iter, epoch = 6, 0
        train_loop = None

    hook = NonFiniteLossHook()
    hook.after_train_iter(_Runner(), 0, outputs={"loss": torch.tensor(1.0), "acc": torch.tensor(float("nan"))})
    with pytest.raises(FloatingPointError, match=r"non-finite loss loss_bbox=inf at iteration 7"):
        hook.after_train_iter(_Runner(), 0, outputs={"loss": 2.0, "loss_bbox": torch.tensor([1.0, float("inf")])})
    with pytest.raises(FloatingPointError, match=r"acc=nan at iteration 7"):
        NonFiniteLossHook(keys=["acc"]).after_train_iter(_Runner(), 0, outputs={"acc": float("nan")})
