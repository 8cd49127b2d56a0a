"""Train an mmdet / mmseg model from a config with mmengine's Runner.

    python tools/train.py configs/mmdet/kat_t_maskrcnn_demo.py
    python tools/train.py configs/mmdet/kat_b_maskrcnn.py --work-dir work_dirs/kat_b --amp
    python tools/train.py CONFIG --resume                 # resume from the latest checkpoint in the work dir
    python tools/train.py CONFIG --resume PATH.pth        # resume from PATH
    tools/dist_train.sh CONFIG 8 [args]                   # 8 processes via torchrun (--launcher pytorch)
    tools/slurm_train.sh PARTITION JOB CONFIG WORK_DIR    # Slurm (srun, --launcher slurm; requeued on preemption)

The registry scope is the config's ``default_scope`` (``mmdet`` or ``mmseg``); ``kat_backbones`` is imported so the
configs' ``custom_imports`` and ``kat_backbones.*`` types resolve. Without CUDA (or with ``--cpu``) the config is made
CPU-runnable and the changes are logged: AmpOptimWrapper -> OptimWrapper, SyncBN/MMSyncBN -> BN, nccl -> gloo, and
under ``--launcher pytorch`` a gloo process group with a CPU DDP wrapper.

Reliability (docs/reliability.md): checkpoints load with ``weights_only=True`` and an allow-list of exactly the globals
mmengine stores (:mod:`kat_backbones.mm.checkpoint`); ``kat_backbones.NonFiniteLossHook`` (stop at the first NaN/inf
loss, exit status 3) and ``kat_backbones.RNGStateHook`` (random states in checkpoints, exact resume) are added to
``custom_hooks`` unless ``--no-reliability-hooks``. Fault tolerance (:mod:`kat_backbones.mm.fault_tolerance`, unless
``--no-fault-tolerance``): checkpoints are written atomically; SIGTERM/SIGUSR1 finish the iteration, save a checkpoint
and exit with status 75; one run per work dir; a checkpoint that does not fit the model is refused
(``--allow-partial-load`` to load it anyway); ``--resume`` takes the checkpoint inside the work dir (even when the dir
was moved) and its seed, and logs the changed training fields and which value wins; data workers die with the
process; a sample that fails to load names its file.

The start-up shared with tools/test.py (common options, config loading, CPU conversion, running and teardown) is
:mod:`kat_backbones.apps.runner`; this file holds what only training does.
"""

from __future__ import annotations

import argparse
import os
import os.path as osp
import sys

if __name__ == "__main__" and {"--cpu", "--cp"} & set(sys.argv[1:]):  # --cpu (or its prefix): hide the GPUs
    os.environ["CUDA_VISIBLE_DEVICES"] = ""  # before torch is imported

from mmengine.config import Config  # noqa: E402
from mmengine.logging import print_log  # noqa: E402

from kat_backbones.apps import runner  # noqa: E402
from kat_backbones.mm.fault_tolerance import add_fault_tolerance  # noqa: E402
from kat_backbones.mm.hooks import add_reliability_hooks  # noqa: E402
from kat_backbones.mm.resume import find_resume_checkpoint, use_checkpoint_seed  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Train a model (mmdet / mmseg config) with mmengine's Runner")
    runner.add_common_args(
        parser, "train", "where to save logs and checkpoints (default: work_dirs/CONFIG_NAME)",
        'train_cfg.max_iters=10 train_dataloader.batch_size=1 model.backbone.init_cfg=None, lists as key="[a,b]"')
    parser.add_argument("--amp", action="store_true", help="mixed precision (AmpOptimWrapper); ignored on CPU")
    parser.add_argument("--auto-scale-lr", action="store_true", help="scale lr by total batch / base_batch_size")
    parser.add_argument(
        "--resume",
        nargs="?",
        type=str,
        const="auto",
        help="resume from this checkpoint, or without a value from the latest checkpoint in the work dir",
    )
    parser.add_argument(
        "--no-reliability-hooks",
        action="store_true",
        help="don't add kat_backbones.NonFiniteLossHook and kat_backbones.RNGStateHook to custom_hooks",
    )
    parser.add_argument(
        "--no-fault-tolerance",
        action="store_true",
        help="plain mmengine: no atomic checkpoints, preemption handling, work-dir lock, resume and checkpoint checks, "
        "dataset guard (kat_backbones.mm.fault_tolerance)",
    )
    return runner.parse_args(parser, argv)


_RUNS = 0  # runs started by this process (see build_cfg)


def build_cfg(args: argparse.Namespace) -> Config:
    """Load the config and apply the command-line settings (shared with tests)."""
    cfg = runner.load_config(args)
    if cfg.get("experiment_name") is None and args.launcher == "none":
        # mmengine names the run's logger after the experiment (default: the timestamp, to the second) and reuses an
        # existing logger of that name, so two runs started in one process within a second would share one log
        # file. A per-process counter keeps every run's log in its own work_dir.
        global _RUNS
        _RUNS += 1
        cfg.experiment_name = f"{osp.splitext(osp.basename(args.config))[0]}_{os.getpid()}_{_RUNS}"

    if args.amp:
        if runner.on_cpu(args):
            print_log("--amp ignored: mixed precision needs CUDA", logger="current", level=30)
        else:
            cfg.optim_wrapper.type = "AmpOptimWrapper"
            cfg.optim_wrapper.setdefault("loss_scale", "dynamic")

    if args.auto_scale_lr:
        if "auto_scale_lr" not in cfg or "base_batch_size" not in cfg.auto_scale_lr:
            raise RuntimeError('--auto-scale-lr needs "auto_scale_lr.base_batch_size" in the config')
        cfg.auto_scale_lr.enable = True

    if args.resume == "auto":
        cfg.resume = True
        cfg.load_from = None
        if not args.no_fault_tolerance:  # the checkpoint inside this work dir, even if last_checkpoint points elsewhere
            cfg.load_from = find_resume_checkpoint(cfg.work_dir)
            cfg.resume = cfg.load_from is not None
    elif args.resume is not None:
        cfg.resume = True
        cfg.load_from = args.resume
    if cfg.get("resume") and cfg.get("load_from") and not args.no_fault_tolerance:
        change = use_checkpoint_seed(cfg, cfg.load_from)  # exact resume without a seed in the config
        if change:
            print_log(change, logger="current")

    if not args.no_reliability_hooks:
        for change in add_reliability_hooks(cfg):
            print_log(change, logger="current")
    if not args.no_fault_tolerance:
        for change in add_fault_tolerance(cfg, training=True, allow_partial_load=args.allow_partial_load):
            print_log(change, logger="current")
    return runner.make_cpu_runnable(cfg, args)


def main(argv: list[str] | None = None) -> None:
    runner.run(build_cfg(parse_args(argv)), "train")


if __name__ == "__main__":
    main()
