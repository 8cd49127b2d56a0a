"""Train an mmdet / mmseg model from a config with mmengine's Runner.

    python tools/train.py configs/mmdet/kat_t_maskrcnn_demo.py
    python tools/train.py configs/mmdet/kat_b_maskrcnn.py --work-dir work_dirs/kat_b --amp
    python tools/train.py CONFIG --resume                 # resume from the latest checkpoint in the work dir
    python tools/train.py CONFIG --resume PATH.pth        # resume from PATH
    tools/dist_train.sh CONFIG 8 [args]                   # 8 processes via torchrun (--launcher pytorch)

The registry scope is the config's ``default_scope`` (``mmdet`` or ``mmseg``); ``kat_backbones`` is imported so the
configs' ``custom_imports`` and ``kat_backbones.*`` types resolve. Without CUDA (or with ``--cpu``) the config is made
CPU-runnable and the changes are logged: AmpOptimWrapper -> OptimWrapper, SyncBN/MMSyncBN -> BN, nccl -> gloo, and
under ``--launcher pytorch`` a gloo process group with a CPU DDP wrapper.

Reliability (docs/reliability.md): checkpoints load with ``weights_only=True`` and an allow-list of exactly the globals
mmengine stores (:mod:`kat_backbones.mm.checkpoint`); ``kat_backbones.NonFiniteLossHook`` (stop at the first NaN/inf
loss, exit status 3) and ``kat_backbones.RNGStateHook`` (random states in checkpoints, exact resume) are added to
``custom_hooks`` unless ``--no-reliability-hooks``.
"""

from __future__ import annotations

import argparse
import os
import os.path as osp
import sys


def _pre_parse_cpu(argv: list[str]) -> bool:
    # --cpu must hide the GPUs before torch is imported
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--cpu", action="store_true")
    return pre.parse_known_args(argv)[0].cpu


if __name__ == "__main__" and _pre_parse_cpu(sys.argv[1:]):
    os.environ["CUDA_VISIBLE_DEVICES"] = ""

import torch  # noqa: E402
from mmengine.config import Config, DictAction  # noqa: E402
from mmengine.logging import print_log  # noqa: E402
from mmengine.registry import RUNNERS  # noqa: E402
from mmengine.runner import Runner  # noqa: E402

import kat_backbones  # noqa: E402, F401  (registers the kat_backbones scope)
from kat_backbones.mm import convert_cfg_for_cpu, destroy_distributed, init_cpu_distributed  # noqa: E402
from kat_backbones.mm.checkpoint import install_safe_checkpoint_loading  # noqa: E402
from kat_backbones.mm.hooks import NONFINITE_LOSS_EXIT_CODE, NonFiniteLossError, add_reliability_hooks  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Train a model (mmdet / mmseg config) with mmengine's Runner")
    parser.add_argument("config", help="train config file path")
    parser.add_argument("--work-dir", help="where to save logs and checkpoints (default: work_dirs/CONFIG_NAME)")
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
        "--cfg-options",
        nargs="+",
        action=DictAction,
        help="override config settings, key=value pairs (e.g. train_cfg.max_iters=10 "
        'train_dataloader.batch_size=1 model.backbone.init_cfg=None, lists as key="[a,b]")',
    )
    parser.add_argument("--launcher", choices=["none", "pytorch"], default="none", help="job launcher")
    parser.add_argument("--cpu", action="store_true", help="run on CPU even when CUDA is available")
    parser.add_argument(
        "--no-reliability-hooks",
        action="store_true",
        help="don't add kat_backbones.NonFiniteLossHook and kat_backbones.RNGStateHook to custom_hooks",
    )
    parser.add_argument("--local_rank", "--local-rank", type=int, default=0)
    args = parser.parse_args(argv)
    if "LOCAL_RANK" not in os.environ:
        os.environ["LOCAL_RANK"] = str(args.local_rank)
    return args


_RUNS = 0  # runs started by this process (see build_cfg)


def build_cfg(args: argparse.Namespace) -> Config:
    """Load the config and apply the command-line settings (shared with tests)."""
    cfg = Config.fromfile(args.config)
    cfg.launcher = args.launcher
    if args.cfg_options is not None:
        cfg.merge_from_dict(args.cfg_options)

    # work_dir: command line > config > ./work_dirs/CONFIG_NAME
    if args.work_dir is not None:
        cfg.work_dir = args.work_dir
    elif cfg.get("work_dir", None) is None:
        cfg.work_dir = osp.join("./work_dirs", osp.splitext(osp.basename(args.config))[0])

    if cfg.get("experiment_name") is None and args.launcher == "none":
        # mmengine names the run's logger after the experiment (default: the timestamp, to the second) and reuses an
        # existing logger of that name, so two runs started in one process within a second would share one log
        # file. A per-process counter keeps every run's log in its own work_dir.
        global _RUNS
        _RUNS += 1
        cfg.experiment_name = f"{osp.splitext(osp.basename(args.config))[0]}_{os.getpid()}_{_RUNS}"

    on_cpu = args.cpu or not torch.cuda.is_available()
    if args.amp:
        if on_cpu:
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
    elif args.resume is not None:
        cfg.resume = True
        cfg.load_from = args.resume

    if not args.no_reliability_hooks:
        for change in add_reliability_hooks(cfg):
            print_log(change, logger="current")

    if on_cpu:
        changes = convert_cfg_for_cpu(cfg)
        if args.launcher != "none":
            changes += init_cpu_distributed(cfg)
        for change in changes:
            print_log(f"CPU run: {change}", logger="current")
    return cfg


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    install_safe_checkpoint_loading()
    cfg = build_cfg(args)
    runner = Runner.from_cfg(cfg) if "runner_type" not in cfg else RUNNERS.build(cfg)
    try:
        runner.train()
    except NonFiniteLossError as err:  # logged by the hook; a distinct status for schedulers (don't just retry)
        raise SystemExit(NONFINITE_LOSS_EXIT_CODE) from err
    finally:
        # torchrun runs: free the Runner (its DDP wrapper) and then the process group, else gloo can abort at exit
        del runner
        destroy_distributed()


if __name__ == "__main__":
    main()
