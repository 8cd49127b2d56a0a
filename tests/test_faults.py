"""Faults of long runs (docs/reliability.md): kills while saving, preemption signals, orphaned data workers, two runs
in one work dir, checkpoints of another model, resumes with a changed config, corrupt samples, bad values found late,
exact resume of the segmentation demo and of a 2-process detection run.

Everything runs on CPU with a few iterations on tiny images; the subprocess runs of one test start together.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

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
from mmengine.hooks import Hook  # noqa: E402
from mmengine.runner import Runner  # noqa: E402
from torch.utils.data import DataLoader, Dataset  # noqa: E402

from kat_backbones.apps.demo_data.ade import make_ade_demo  # noqa: E402
from kat_backbones.apps.demo_data.imagenet import make_imagenet_demo  # noqa: E402
from kat_backbones.checkpoint import read_checkpoint  # noqa: E402
from kat_backbones.mm.fault_tolerance import add_fault_tolerance, close_run  # noqa: E402
from kat_backbones.mm.guarded_dataset import GuardedDataset, SampleLoadError  # noqa: E402
from kat_backbones.mm.preemption import PREEMPTED_EXIT_CODE, PreemptedError  # noqa: E402
from kat_backbones.mm.resume import config_differences, find_resume_checkpoint  # noqa: E402
from kat_backbones.mm.width_check import check_widths  # noqa: E402
from kat_backbones.mm.work_dir_lock import LOCK_NAME, WorkDirBusyError, WorkDirLock  # noqa: E402
from kat_backbones.models.dense import KATDense  # noqa: E402
from kat_backbones.models.state_fit import CheckpointMismatchError  # noqa: E402
from tests.mm_utils import (  # noqa: E402, F401  (fixtures: coco_demo, single_thread)
    DET_CONFIG_DIR,
    REPO,
    coco_demo_fixture,
    shrink_det_cfg,
    single_thread_fixture,
)
from tests.test_reliability import (  # noqa: E402
    SEG_DEMO,
    assert_same_state,
    free_port,
    sub_env,
    write_cls_config,
)
from tools import test as tools_test  # noqa: E402
from tools import train  # noqa: E402


@pytest.fixture(scope="module", name="cls_data")
def cls_data_fixture(tmp_path_factory) -> Path:
    """4 classes, 8 training / 4 validation images of 32 px."""
    return make_imagenet_demo(tmp_path_factory.mktemp("cls"), num_classes=4, num_val=4, num_train=8, size=32)


def start(cmd: list[str], log: Path, **env: str) -> subprocess.Popen:
    """A subprocess in its own session (so a kill reaches its children), output to ``log``."""
    with open(log, "w") as out:
        return subprocess.Popen(
            cmd, cwd=REPO, env=sub_env(**env), stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )


def wait_for(predicate, proc: subprocess.Popen | None, log: Path | None, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if proc is not None:
            assert proc.poll() is None, log.read_text()[-3000:] if log else proc.returncode
        assert time.monotonic() < deadline, log.read_text()[-3000:] if log else "timeout"
        time.sleep(0.05)


def finish(proc: subprocess.Popen, log: Path, status: int = 0, timeout: float = 300) -> str:
    assert proc.wait(timeout=timeout) == status, log.read_text()[-4000:]
    return log.read_text()


# ---------------------------------------------------------------------------------------------------------------------
# 1. a kill while a checkpoint is written (max_keep_ckpts=1)

# tools/train.py with the checkpoint writer stopped half-way through its 2nd file, as if the process were killed
# while writing (the test then SIGKILLs it): mmengine writes checkpoints with LocalBackend.put
_HANG_IN_SECOND_SAVE = """
import runpy, sys, time
from pathlib import Path
from mmengine.fileio import LocalBackend
marker, argv = sys.argv[1], sys.argv[2:]
put, calls = LocalBackend.put, []
def slow_put(self, obj, filepath):
    if '.pth' in str(filepath):
        calls.append(filepath)
        if len(calls) == 2:
            with open(filepath, 'wb') as f:
                f.write(obj[: len(obj) // 2])
            Path(marker).write_text(str(filepath))
            time.sleep(600)
    return put(self, obj, filepath)
LocalBackend.put = slow_put
sys.argv = ['tools/train.py', *argv]
runpy.run_path('tools/train.py', run_name='__main__')
"""


def test_kill_while_saving_keeps_a_checkpoint_to_resume(cls_data, tmp_path):
    """SIGKILL while epoch_2.pth is half-written with max_keep_ckpts=1: epoch_1.pth and last_checkpoint survive and
    ``--resume`` finishes the run. mmengine's own CheckpointHook (``--no-fault-tolerance``) loses the run: it deleted
    epoch_1.pth before writing, last_checkpoint names the deleted file (the check can fail)."""
    cfg_file = write_cls_config(tmp_path / "kill_save_cfg.py", cls_data, max_epochs=2, keep=1)
    runs = {}
    for name, extra in (("atomic", []), ("mmengine", ["--no-fault-tolerance"])):
        work, marker = tmp_path / name, tmp_path / f"{name}.marker"
        cmd = [sys.executable, "-c", _HANG_IN_SECOND_SAVE, str(marker), str(cfg_file), "--work-dir", str(work), *extra]
        runs[name] = (start(cmd, tmp_path / f"{name}.log"), work, marker)
    for name, (proc, _, marker) in runs.items():
        wait_for(marker.exists, proc, tmp_path / f"{name}.log")
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()

    work = runs["mmengine"][1]
    assert not (work / "epoch_1.pth").exists()  # deleted before the new one was written
    assert Path((work / "last_checkpoint").read_text()).name == "epoch_1.pth"

    work = runs["atomic"][1]
    assert Path(runs["atomic"][2].read_text()).name == "epoch_2.pth.part"  # the kill hit the temporary name
    assert not (work / "epoch_2.pth").exists() and (work / "epoch_2.pth.part").exists()
    assert (work / "last_checkpoint").read_text() == str(work / "epoch_1.pth")
    assert read_checkpoint(work / "epoch_1.pth")["meta"]["epoch"] == 1  # complete
    cmd = [sys.executable, "tools/train.py", str(cfg_file), "--work-dir", str(work), "--resume"]
    out = finish(start(cmd, tmp_path / "resume.log"), tmp_path / "resume.log")
    assert "removed" in out and "epoch_2.pth.part" in out and "resumed epoch: 1" in out
    assert read_checkpoint(work / "epoch_2.pth")["meta"]["epoch"] == 2
    assert sorted(p.name for p in work.glob("*.pth*")) == ["epoch_2.pth"]  # epoch_1 rotated away after the save


# ---------------------------------------------------------------------------------------------------------------------
# 2 + 10. SIGTERM / SIGUSR1: checkpoint, exit 75, exact resume (segmentation demo, iteration-based, data workers)


def write_seg_config(path: Path, data_root: Path, max_iters: int = 4) -> Path:
    """The segmentation demo at 128 px: batch 2, one persistent data worker with the demo's random augmentations,
    the heads' dropout, 4 iterations, a checkpoint every 2, no validation, no seed (as the demo)."""
    cfg = Config.fromfile(str(SEG_DEMO))
    for loader in ("train_dataloader", "val_dataloader", "test_dataloader"):
        cfg[loader].dataset.data_root = str(data_root)
    cfg.train_dataloader.update(batch_size=2, num_workers=1, persistent_workers=True)
    cfg.train_cfg = dict(type="IterBasedTrainLoop", max_iters=max_iters, val_interval=100)
    cfg.val_dataloader = cfg.val_cfg = cfg.val_evaluator = None
    cfg.test_dataloader = cfg.test_cfg = cfg.test_evaluator = None
    cfg.param_scheduler = [dict(type="LinearLR", start_factor=0.1, by_epoch=False, begin=0, end=max_iters)]
    cfg.default_hooks.logger.interval = 1
    cfg.default_hooks.checkpoint.update(interval=2, max_keep_ckpts=1)  # no seed, as the demo: each run draws one
    cfg.dump(str(path))
    return path


@pytest.fixture(scope="module", name="ade_data")
def ade_data_fixture(tmp_path_factory) -> Path:
    return make_ade_demo(tmp_path_factory.mktemp("ade"), num_train=4, num_val=2, size=128, seed=0)


def test_sigterm_checkpoints_and_resumes_exactly(ade_data, tmp_path):
    """tools/train.py (segmentation demo) gets SIGTERM during training: it finishes the iteration, writes
    iter_N.pth, exits with status 75; ``--resume`` ends with the weights, optimizer state and losses of an
    uninterrupted run (IterBasedTrainLoop: the data worker replays the skipped batches, RNGStateHook restores the
    dropout stream). The resumed process's config has no seed, as the demo's: it takes the checkpoint's."""
    cfg_file = write_seg_config(tmp_path / "seg_cfg.py", ade_data)
    ref_dir, run_dir = tmp_path / "ref", tmp_path / "run"
    train = [sys.executable, "tools/train.py", str(cfg_file), "--work-dir"]
    seed = ["--cfg-options", "randomness.seed=1234"]  # both runs draw the same; the resume is told nothing
    ref = start([*train, str(ref_dir), *seed], tmp_path / "ref.log")
    run = start([*train, str(run_dir), *seed], tmp_path / "run.log")
    wait_for(lambda: "Iter(train) [1/4]" in (tmp_path / "run.log").read_text(), run, tmp_path / "run.log")
    run.send_signal(signal.SIGTERM)
    out = finish(run, tmp_path / "run.log", status=PREEMPTED_EXIT_CODE)
    assert "PreemptionHook: SIGTERM received; stopped after iteration" in out
    stopped = int(out.split("stopped after iteration ")[1].split()[0])
    assert 1 <= stopped < 4
    assert Path((run_dir / "last_checkpoint").read_text()).name == f"iter_{stopped}.pth"
    assert read_checkpoint(run_dir / f"iter_{stopped}.pth")["meta"]["iter"] == stopped

    out = finish(start([*train, str(run_dir), "--resume"], tmp_path / "resume.log"), tmp_path / "resume.log")
    assert f"resumed epoch: 0, iter: {stopped}" in out
    assert "resume: randomness.seed = 1234" in out  # the interrupted run's seed (the config has none)
    finish(ref, tmp_path / "ref.log")
    a, b = read_checkpoint(ref_dir / "iter_4.pth"), read_checkpoint(run_dir / "iter_4.pth")
    assert_same_state(a["state_dict"], b["state_dict"])
    for pa, pb in zip(a["optimizer"]["state"].values(), b["optimizer"]["state"].values()):
        assert_same_state(pa, pb)
    losses = [c["message_hub"]["log_scalars"]["train/loss"].data[0].tolist() for c in (a, b)]
    assert len(losses[0]) == 4 and losses[0] == losses[1]


class _SignalSelf(Hook):
    """Sends a signal to this process after the given iteration (what Slurm does from outside)."""

    def __init__(self, signum: int, after_iter: int) -> None:
        self.signum, self.after_iter = signum, after_iter

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None) -> None:
        if runner.iter + 1 == self.after_iter:
            os.kill(os.getpid(), self.signum)


def test_sigusr1_mid_epoch_saves_an_iteration_checkpoint(cls_data, tmp_path):
    """SIGUSR1 (``sbatch --signal=USR1@120``) in the middle of an epoch of an epoch-based run: the iteration finishes,
    iter_1.pth is written and named by last_checkpoint, PreemptedError stops the run (tools/train.py: status 75),
    and the previous handler is back afterwards."""
    cfg_file = write_cls_config(tmp_path / "usr1_cfg.py", cls_data, max_epochs=2)
    cfg = train.build_cfg(train.parse_args([str(cfg_file), "--work-dir", str(tmp_path / "work"), "--cpu"]))
    runner = Runner.from_cfg(cfg)
    runner.register_hook(_SignalSelf(signal.SIGUSR1, after_iter=1), priority="HIGHEST")
    before = signal.getsignal(signal.SIGUSR1)
    try:
        with pytest.raises(PreemptedError, match="SIGUSR1 received; stopped after iteration 1") as info:
            runner.train()
    finally:
        close_run(runner)
    assert signal.getsignal(signal.SIGUSR1) is before
    assert info.value.checkpoint == str(tmp_path / "work" / "iter_1.pth") and info.value.iteration == 1
    meta = read_checkpoint(tmp_path / "work" / "iter_1.pth")["meta"]
    assert (meta["epoch"], meta["iter"]) == (0, 1)  # mid-epoch: resuming restarts epoch 1 (logged by RNGStateHook)
    assert (tmp_path / "work" / "last_checkpoint").read_text() == info.value.checkpoint


# ---------------------------------------------------------------------------------------------------------------------
# 3. data workers die with their parent

# a training-like parent: a persistent 2-worker loader whose workers are busy with slow samples, pids written to a
# file; killed by the test
_LOADER_PARENT = """
import json, os, sys, time
import numpy
from torch.utils.data import DataLoader, Dataset
class Big(Dataset):
    def __len__(self):
        return 1000
    def __getitem__(self, i):
        if i >= 2:
            time.sleep(60)  # a slow sample (a hung network read, a huge decode): busy when the parent dies
        return numpy.zeros(8)
guard, how, pid_file = sys.argv[1] == 'guard', sys.argv[2], sys.argv[3]
if guard:
    from kat_backbones.mm.guarded_dataset import GuardedDataset
dataset = GuardedDataset(Big()) if guard else Big()
loader = DataLoader(dataset, batch_size=None, num_workers=2, persistent_workers=True, prefetch_factor=8)
it = iter(loader)
next(it)
with open(pid_file + '.tmp', 'w') as f:
    json.dump([w.pid for w in it._workers], f)
os.replace(pid_file + '.tmp', pid_file)
time.sleep(1)  # the workers are inside slow samples
if how == 'crash':
    os.abort()  # SIGABRT: no Python cleanup, as a segfault
time.sleep(600)
"""


def _descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (torchrun starts its workers in sessions of their own: killpg misses them)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    out, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"  # a zombie is dead (waiting to be reaped)
    except FileNotFoundError:
        return False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_data_workers_die_with_their_parent(tmp_path):
    """SIGKILL, SIGTERM or a crash (abort) of the process that owns a persistent data loader: with GuardedDataset no
    worker is left 10 s later; without it a worker busy with a sample outlives its SIGKILLed parent (PyTorch's own
    watchdog only looks for the parent between samples). A guarded worker ignores SIGTERM itself."""
    cases = [("guard", "SIGKILL"), ("guard", "SIGTERM"), ("guard", "crash"), ("plain", "SIGKILL")]
    procs = {}
    for guard, how in cases:
        pid_file = tmp_path / f"{guard}-{how}.json"
        cmd = [sys.executable, "-c", _LOADER_PARENT, guard, how, str(pid_file)]
        procs[guard, how] = (subprocess.Popen(cmd, cwd=REPO, env=sub_env()), pid_file)
    workers = {}
    for key, (proc, pid_file) in procs.items():
        wait_for(pid_file.exists, proc, None, timeout=120)
        workers[key] = json.loads(pid_file.read_text())
    time.sleep(1.5)
    os.kill(workers["guard", "SIGKILL"][0], signal.SIGTERM)  # Slurm signals every process: a worker leaves stopping
    time.sleep(0.5)  # to its parent (a dying worker would abort the parent's last iteration)
    assert _alive(workers["guard", "SIGKILL"][0])
    for (_, how), (proc, _) in procs.items():
        if how != "crash":
            proc.send_signal(getattr(signal, how))
    killed = time.monotonic()
    for proc, _ in procs.values():
        proc.wait(timeout=60)
    guarded = [p for k, ps in workers.items() if k[0] == "guard" for p in ps]
    while any(_alive(p) for p in guarded) and time.monotonic() < killed + 10:  # "none left after 10 s"
        time.sleep(0.1)
    left = {k: [p for p in ps if _alive(p)] for k, ps in workers.items()}  # plain ones: 60 s samples, still busy
    try:
        assert left[("guard", "SIGKILL")] == left[("guard", "SIGTERM")] == left[("guard", "crash")] == []
        assert left[("plain", "SIGKILL")], "the unguarded workers should still be busy (negative control)"
    finally:
        for pids in left.values():
            for pid in pids:
                os.kill(pid, signal.SIGKILL)


# ---------------------------------------------------------------------------------------------------------------------
# 4. one run per work dir

_HOLD_LOCK = """
import sys, time
from kat_backbones.mm.work_dir_lock import WorkDirLock
lock = WorkDirLock(sys.argv[1]).acquire()
print('locked', flush=True)
time.sleep(600)
"""


def test_second_run_in_a_work_dir_is_refused(cls_data, tmp_path):
    """A live run's lock refuses tools/train.py in the same work dir (naming the other run's pid, host and command)
    before any checkpoint is touched; after a SIGKILL the lock is stale: reported and taken over."""
    work = tmp_path / "work"
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLD_LOCK, str(work)], cwd=REPO, env=sub_env(), stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        cfg_file = write_cls_config(tmp_path / "lock_cfg.py", cls_data, max_epochs=1)
        with pytest.raises(WorkDirBusyError, match=f"in use by another training run: pid {holder.pid} on host"):
            train.main([str(cfg_file), "--work-dir", str(work), "--cpu"])
        assert not list(work.glob("*.pth")) and not (work / "last_checkpoint").exists()
        with pytest.raises(WorkDirBusyError, match="command: -c "):
            WorkDirLock(str(work)).acquire()
    finally:
        holder.kill()
        holder.wait()
    lock = WorkDirLock(str(work)).acquire()  # the kernel dropped the killed holder's flock
    assert lock.stale["pid"] == holder.pid
    lock.release()
    assert json.loads((work / LOCK_NAME).read_text())["state"] == "released"
    with WorkDirLock(str(work)) as again:  # a released lock is not stale
        assert again.stale is None


# ---------------------------------------------------------------------------------------------------------------------
# 5. checkpoints that don't fit the model


@pytest.fixture(scope="module", name="cls_run")
def cls_run_fixture(cls_data, tmp_path_factory) -> tuple[Path, Path]:
    """tools/train.py on the tiny classification demo for one epoch; returns (config, work dir)."""
    work = tmp_path_factory.mktemp("cls_run")
    cfg_file = write_cls_config(work / "fault_cls_cfg.py", cls_data, max_epochs=1)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        train.main([str(cfg_file), "--work-dir", str(work / "run"), "--cpu"])
    finally:
        torch.set_num_threads(threads)
    return cfg_file, work / "run"


def test_test_tool_refuses_another_models_checkpoint(cls_run, tmp_path):
    """tools/test.py with a checkpoint of a 2-block model in a 3-block config: refused with the count of matching
    tensors, the missing ones and the flag; with --allow-partial-load it evaluates."""
    cfg_file, run = cls_run
    deeper = tmp_path / "deeper.py"
    deeper.write_text(f"_base_ = {str(cfg_file)!r}\nmodel = dict(depth=3)\n")
    with pytest.raises(CheckpointMismatchError) as info:
        tools_test.main([str(deeper), str(run / "epoch_1.pth"), "--work-dir", str(tmp_path / "t1"), "--cpu"])
    message = str(info.value)
    fit = info.value.fit
    assert fit.missing and all(k.startswith("model.blocks.2.") for k in fit.missing)
    assert f"{len(fit.matched)} of {fit.total} tensors of the model match it" in message
    assert "model.blocks.*.attn.qkv.weight" not in message and "model.blocks.2." in message
    assert "--allow-partial-load" in message
    partial = [str(deeper), str(run / "epoch_1.pth"), "--work-dir", str(tmp_path / "t2"), "--allow-partial-load"]
    tools_test.main([*partial, "--cpu", "--cfg-options", "experiment_name=partial"])  # its own log file
    log = "\n".join(p.read_text() for p in (tmp_path / "t2").rglob("*.log"))
    assert "partial load (allow_partial)" in log and "accuracy/top1" in log


def test_pretrained_init_refuses_checkpoints_that_dont_fit(tmp_path):
    """``Pretrained`` init of the KAT backbone: a ResNet file (0 tensors match) and a KAT-S file in KAT-T (only the
    48 rationals match) are refused, naming the count, what is missing and allow_partial; a ViT file into KAT stays
    allowed and says the rationals keep their init."""
    resnet = tmp_path / "resnet.pth"
    torch.save(timm.create_model("resnet10t", pretrained=False).state_dict(), resnet)
    with pytest.raises(CheckpointMismatchError, match=r"0 of \d+ tensors of the model match it.*allow_partial=True"):
        KATDense("tiny", img_size=64, window_size=4).load_pretrained(str(resnet))

    small = tmp_path / "kat_s.pth"
    torch.save(KATDense("small", img_size=64, window_size=4).state_dict(), small)
    tiny = KATDense("tiny", img_size=64, window_size=4)
    with pytest.raises(CheckpointMismatchError) as info:
        tiny.load_pretrained(str(small))
    matched = info.value.fit.matched  # the rationals (8 groups at any width) and the head-dim rel-pos tables
    assert len([k for k in matched if "weight_" in k]) == 48 and all("weight_" in k or "rel_pos" in k for k in matched)
    assert "other shapes" in str(info.value) and f"{len(matched)} of {info.value.fit.total} tensors" in str(info.value)
    missing, _ = tiny.load_pretrained(str(small), allow_partial=True)  # deliberate: the rationals only

    vit = tmp_path / "vit.pth"
    torch.save(timm.create_model("vit_tiny_patch16_224", pretrained=False).state_dict(), vit)
    records = []
    logger = logging.getLogger("test_faults.pretrained")
    logger.setLevel(logging.INFO)
    logger.addHandler(_ListHandler(records))
    KATDense("tiny", img_size=64, window_size=4).load_pretrained(str(vit), logger=logger)
    assert any("48 rational tensors keep their init" in r for r in records)


class _ListHandler:
    """A minimal logging handler collecting messages (avoids caplog's interplay with mmengine's loggers)."""

    level = 0

    def __init__(self, records: list[str]) -> None:
        self.records = records

    def handle(self, record) -> None:
        self.records.append(record.getMessage())


# ---------------------------------------------------------------------------------------------------------------------
# 6. --resume with a changed config, a finished run, a moved work dir


def test_resume_reports_changed_fields_finished_runs_and_moved_dirs(cls_run, tmp_path):
    """``--resume`` of a finished 1-epoch run from a copied work dir with another lr and batch size: it uses the
    copy's checkpoint (not the old location's), says lr comes from the checkpoint and the batch size from the config,
    and that nothing is left to train."""
    cfg_file, run = cls_run
    moved = tmp_path / "moved"
    shutil.copytree(run, moved)
    assert find_resume_checkpoint(str(moved)) == str(moved / "epoch_1.pth")
    options = ["optim_wrapper.optimizer.lr=0.5", "train_dataloader.batch_size=2"]
    train.main([str(cfg_file), "--work-dir", str(moved), "--cpu", "--resume", "--cfg-options", *options])
    log = "\n".join(p.read_text() for p in moved.rglob("*.log") if p.stat().st_mtime > time.time() - 600)
    assert f"last_checkpoint names {run / 'epoch_1.pth'}; resuming from {moved / 'epoch_1.pth'}" in log
    assert f"Load checkpoint from {moved / 'epoch_1.pth'}" in log
    assert "optim_wrapper.optimizer.lr differs: checkpoint" in log and "-> the checkpoint's value" in log
    assert "train_dataloader.batch_size differs: checkpoint 4, config 2 -> the config's value 2" in log
    assert "this run is already finished" in log

    old = Config(dict(optim_wrapper=dict(optimizer=dict(lr=1e-3)), train_cfg=dict(max_iters=10)))
    new = Config(dict(optim_wrapper=dict(optimizer=dict(lr=2e-3)), train_cfg=dict(max_iters=20)))
    assert {d[0]: d[3] for d in config_differences(old, new)} == {
        "optim_wrapper.optimizer.lr": "checkpoint",
        "train_cfg.max_iters": "config",
    }


# ---------------------------------------------------------------------------------------------------------------------
# 7. corrupt samples name their file


def test_corrupt_images_name_file_and_index(cls_data, coco_demo, tmp_path):
    """A zero-byte and a truncated JPEG in the classification set (configs/imagenet's mmpretrain CustomDataset +
    TimmTransform), a zero-byte COCO image through mmdet's pipeline (mmcv's loader), in the main process and in a data
    worker: the error names the file and the sample index."""
    from mmdet.registry import DATASETS as MMDET_DATASETS
    from mmdet.utils import register_all_modules
    from mmpretrain.datasets import CustomDataset

    from kat_backbones.mm.cls import TimmTransform

    root = tmp_path / "cls"
    shutil.copytree(cls_data, root)
    images = sorted((root / "train").rglob("*.*"))
    images[0].write_bytes(b"")
    images[1].write_bytes(images[1].read_bytes()[:200])
    ds = CustomDataset(  # configs/imagenet's dataset and pipeline step
        data_root=str(root), data_prefix=dict(img_path="train"), pipeline=[TimmTransform(input_size=32)]
    )
    for idx in (0, 1):
        path = ds.get_data_info(idx)["img_path"]
        with pytest.raises(SampleLoadError, match=rf"cannot read image {path} \(sample index {idx}\)"):
            ds[idx]

    register_all_modules(init_default_scope=True)
    coco = tmp_path / "coco"
    shutil.copytree(coco_demo, coco)
    cfg = Config.fromfile(str(DET_CONFIG_DIR / "kat_t_maskrcnn_demo.py"))
    dataset_cfg = cfg.train_dataloader.dataset
    dataset_cfg.update(data_root=str(coco), pipeline=[dict(type="LoadImageFromFile")], filter_cfg=None)
    guarded = GuardedDataset(MMDET_DATASETS.build(dataset_cfg))
    bad = guarded.get_data_info(2)["img_path"]
    Path(bad).write_bytes(b"")
    with pytest.raises(SampleLoadError, match=rf"cannot load sample 2 of CocoDataset \(img_path={bad}"):
        guarded[2]
    loader = DataLoader(_Subset(guarded, [2]), batch_size=1, num_workers=1, collate_fn=lambda b: b)
    with pytest.raises(SampleLoadError, match=rf"sample 2 of CocoDataset \(img_path={bad}.*error"):
        next(iter(loader))


class _Subset(Dataset):
    def __init__(self, dataset, indices):
        self.dataset, self.indices = dataset, indices

    def __len__(self):
        return len(self.indices)

    def __getitem__(self, i):
        return self.dataset[self.indices[i]]


def test_train_and_test_tools_wrap_datasets_and_hooks(tmp_path):
    """tools/train.py's config edits: atomic checkpoint hook, preemption/lock/resume/fit hooks, guarded datasets."""
    cfg = Config.fromfile(str(SEG_DEMO))
    changes = add_fault_tolerance(cfg, training=True)
    assert cfg.default_hooks.checkpoint.type == "kat_backbones.AtomicCheckpointHook"
    types = [h["type"] for h in cfg.custom_hooks]
    for name in ("PreemptionHook", "WorkDirLockHook", "ResumeCheckHook", "CheckpointFitHook"):
        assert f"kat_backbones.{name}" in types
    for loader in ("train_dataloader", "val_dataloader", "test_dataloader"):
        assert cfg[loader].dataset.type == "kat_backbones.GuardedDataset"
        assert cfg[loader].dataset.dataset.type == "ADE20KDataset"
    assert "kat_backbones.DistRNGStateHook" in types
    assert len(changes) == 1 + 5 + 3
    assert add_fault_tolerance(cfg, training=True) == []  # idempotent


# ---------------------------------------------------------------------------------------------------------------------
# 8. bad values fail at build time


def test_bad_values_fail_at_build_time():
    from mmengine.optim import build_optim_wrapper

    with pytest.raises(ValueError, match=r"drop_path_rate must be a number in \[0, 1\).*got 2"):
        KATDense("tiny", img_size=64, window_size=4, drop_path_rate=2)
    with pytest.raises(ValueError, match="drop_path_rate must be a number"):
        timm.create_model("kat_tiny_swish_patch16_224", drop_path_rate=1.0)
    with pytest.raises(TypeError, match=r"window_size must be an int .*got \[4, 4\]"):
        KATDense("tiny", img_size=64, window_size=[4, 4])
    arch = dict(embed_dims=32, depth=2, num_heads=2)
    model = KATDense(arch, img_size=32, window_size=2, out_indices=(1,), global_blocks=(1,))
    optim = dict(
        optimizer=dict(type="AdamW", lr="1e-4"),
        constructor="kat_backbones.LayerDecayOptimizerConstructor",
        paramwise_cfg=dict(decay_rate=0.7),
    )
    with pytest.raises(TypeError, match="optim_wrapper.optimizer.lr must be a number, got str '1e-4'"):
        build_optim_wrapper(model, optim)

    det = Config.fromfile(str(DET_CONFIG_DIR / "kat_t_maskrcnn.py")).model
    check_widths(det)
    det.backbone.arch = "small"
    with pytest.raises(ValueError, match=r"model.neck.backbone_channel=192 .* arch='small' outputs 384 channels"):
        check_widths(det)
    seg = Config.fromfile(str(SEG_DEMO)).model
    check_widths(seg)
    seg.decode_head.in_channels = [192, 192, 384, 192]
    with pytest.raises(ValueError, match=r"model.decode_head.in_channels\[2\]=384 .* outputs 192"):
        check_widths(seg)


# ---------------------------------------------------------------------------------------------------------------------
# 10. a 2-process (gloo) detection run killed after a checkpoint resumes exactly


@pytest.mark.slow
def test_two_process_detection_killed_after_checkpoint_resumes_exactly(coco_demo, tmp_path):
    """tools/dist_train.sh, detection demo on 2 CPU processes (gloo), 4 iterations, checkpoint every 2: SIGKILL of the
    whole job after iter_2.pth, then ``--resume``; the final weights and losses equal an uninterrupted 2-process run
    (data order and augmentations: the data workers replay the skipped batches; RoI sampling: DistRNGStateHook gives
    each process its random state back; without it loss_cls differs from iteration 3 on)."""
    cfg = Config.fromfile(str(DET_CONFIG_DIR / "kat_t_maskrcnn_demo.py"))
    shrink_det_cfg(cfg, data_root=coco_demo, size=64, max_iters=4, head_channels=32)
    cfg.train_dataloader.update(num_workers=1, persistent_workers=True)
    cfg.val_dataloader = cfg.val_cfg = cfg.val_evaluator = None
    cfg.test_dataloader = cfg.test_cfg = cfg.test_evaluator = None
    cfg.train_cfg.val_interval = 100
    cfg.default_hooks.checkpoint.update(interval=2, max_keep_ckpts=1)
    cfg.default_hooks.logger.interval = 1
    cfg.randomness = dict(seed=0)
    cfg_file = tmp_path / "det2.py"
    cfg.dump(str(cfg_file))

    def dist(work: Path, log: Path, *extra: str) -> subprocess.Popen:
        cmd = ["bash", "tools/dist_train.sh", str(cfg_file), "2", "--work-dir", str(work), *extra]
        return start(cmd, log, PORT=str(free_port()), PYTHON=sys.executable)

    ref = dist(tmp_path / "ref", tmp_path / "ref.log")
    run = dist(tmp_path / "run", tmp_path / "run.log")
    last = tmp_path / "run" / "last_checkpoint"
    wait_for(lambda: last.exists() and last.read_text().endswith("iter_2.pth"), run, tmp_path / "run.log", 600)
    for pid in [run.pid, *_descendants(run.pid)]:  # a lost node: torchrun, both ranks, their data workers at once
        os.kill(pid, signal.SIGKILL)
    run.wait()
    resumed = dist(tmp_path / "run", tmp_path / "resume.log", "--resume")
    out = finish(resumed, tmp_path / "resume.log", timeout=600)
    finish(ref, tmp_path / "ref.log", timeout=600)
    assert "resumed epoch: 0, iter: 2" in out and "DistRNGStateHook: random states of all 2 processes restored" in out
    a, b = read_checkpoint(tmp_path / "ref" / "iter_4.pth"), read_checkpoint(tmp_path / "run" / "iter_4.pth")
    assert_same_state(a["state_dict"], b["state_dict"])
    losses = [c["message_hub"]["log_scalars"]["train/loss"].data[0].tolist() for c in (a, b)]
    assert len(losses[0]) == 4 and losses[0] == losses[1]


# ---------------------------------------------------------------------------------------------------------------------
# 2. tools/slurm_train.sh (srun and scontrol replaced by recording shims: no Slurm here)


@pytest.mark.parametrize(("status", "requeued"), [(75, True), (0, False), (3, False)])
def test_slurm_train_requeues_only_a_preempted_job(tmp_path, status, requeued):
    """srun runs tools/train.py with --launcher=slurm and --resume; exit status 75 (preempted, checkpoint written)
    requeues the batch job, any other status is passed through without a requeue."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, code in (("srun", status), ("scontrol", 0)):
        shim = bin_dir / name
        shim.write_text(f'#!/usr/bin/env bash\necho "{name} $*" >> {tmp_path / "calls"}\nexit {code}\n')
        shim.chmod(0o755)
    env = dict(os.environ, PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}", SLURM_JOB_ID="4242", GPUS="16")
    cmd = ["bash", "tools/slurm_train.sh", "gpu", "kat_b", "configs/mmdet/kat_b_maskrcnn.py", "work_dirs/x", "--amp"]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == status, proc.stderr
    calls = (tmp_path / "calls").read_text().splitlines()
    srun = calls[0]
    assert srun.startswith("srun -p gpu --job-name=kat_b --gres=gpu:8 --ntasks=16 --ntasks-per-node=8")
    assert "--kill-on-bad-exit=1" in srun and srun.endswith(
        "tools/train.py configs/mmdet/kat_b_maskrcnn.py --work-dir=work_dirs/x --launcher=slurm --resume --amp"
    )
    assert calls[1:] == (["scontrol requeue 4242"] if requeued else [])
