"""The start-up shared by ``tools/train.py`` and ``tools/test.py``: command line -> config -> mmengine Runner.

Both tools take a config, ``--work-dir``, ``--cfg-options``, ``--launcher``, ``--cpu`` and ``--local-rank``
(:func:`add_common_args`); :func:`load_config` reads the config and applies them; :func:`make_cpu_runnable` is the
last step of every config (without CUDA, or with ``--cpu``: the changes of
:func:`kat_backbones.mm.convert_cfg_for_cpu`, and under ``--launcher pytorch`` a gloo process group with a CPU DDP
wrapper, each change logged); :func:`run` builds the Runner with safe checkpoint loading, runs ``train`` or ``test``
and tears the process group down. What only one tool does (``--amp``, ``--resume``, the reliability hooks of
training; ``--out`` of testing) stays in that tool.

mmengine's Runner does the work; this module only wires the command line to it (as mmdet's and mmseg's own
``tools/train.py`` do), once for both tools.

``--cpu`` must hide the GPUs before torch is imported, so each tool does that itself, before importing this module.
"""

from __future__ import annotations

import argparse
import os
import os.path as osp

import torch
from mmengine.config import Config, DictAction
from mmengine.logging import print_log
from mmengine.registry import RUNNERS
from mmengine.runner import Runner

import kat_backbones.models  # noqa: F401  (registers the timm KAT models)
from kat_backbones.mm import convert_cfg_for_cpu, destroy_distributed, init_cpu_distributed
from kat_backbones.mm.checkpoint import install_safe_checkpoint_loading
from kat_backbones.mm.fault_tolerance import close_run
from kat_backbones.mm.hooks import NONFINITE_LOSS_EXIT_CODE, NonFiniteLossError
from kat_backbones.mm.preemption import PREEMPTED_EXIT_CODE, PreemptedError

__all__ = ["add_common_args", "parse_args", "load_config", "make_cpu_runnable", "on_cpu", "run"]


def add_common_args(parser: argparse.ArgumentParser, mode: str, work_dir_help: str, cfg_options_example: str) -> None:
    """The options both tools take (``mode``: ``'train'`` or ``'test'``, for the help). ``config`` comes first; each
    tool adds its own positionals and options after."""
    parser.add_argument("config", help=f"{mode} config file path")
    parser.add_argument("--work-dir", help=work_dir_help)
    parser.add_argument(
        "--cfg-options",
        nargs="+",
        action=DictAction,
        help=f"override config settings, key=value pairs (e.g. {cfg_options_example})",
    )
    parser.add_argument("--launcher", choices=["none", "pytorch", "slurm"], default="none", help="job launcher")
    parser.add_argument("--cpu", action="store_true", help="run on CPU even when CUDA is available")
    parser.add_argument(
        "--allow-partial-load",
        action="store_true",
        help="load a checkpoint that leaves model tensors unfilled (refused by default: another model's file); "
        "the unfilled tensors keep their init",
    )


def parse_args(parser: argparse.ArgumentParser, argv: list[str] | None = None) -> argparse.Namespace:
    """Parses ``argv`` (``--local-rank`` added last) and exports ``LOCAL_RANK`` when the launcher did not."""
    parser.add_argument("--local_rank", "--local-rank", type=int, default=0)
    args = parser.parse_args(argv)
    if "LOCAL_RANK" not in os.environ:
        os.environ["LOCAL_RANK"] = str(args.local_rank)
    return args


def load_config(args: argparse.Namespace) -> Config:
    """The config with the launcher, ``--cfg-options`` and the work dir (command line > config >
    ``./work_dirs/CONFIG_NAME``) applied."""
    cfg = Config.fromfile(args.config)
    cfg.launcher = args.launcher
    if args.cfg_options is not None:
        cfg.merge_from_dict(args.cfg_options)
    if args.work_dir is not None:
        cfg.work_dir = args.work_dir
    elif cfg.get("work_dir", None) is None:
        cfg.work_dir = osp.join("./work_dirs", osp.splitext(osp.basename(args.config))[0])
    return cfg


def on_cpu(args: argparse.Namespace) -> bool:
    """Whether this run is a CPU run (``--cpu``, or no CUDA)."""
    return args.cpu or not torch.cuda.is_available()


def make_cpu_runnable(cfg: Config, args: argparse.Namespace) -> Config:
    """On a CPU run: the config made CPU-runnable (and a CPU process group under ``--launcher pytorch``), each change
    logged. Otherwise the config unchanged."""
    if on_cpu(args):
        changes = convert_cfg_for_cpu(cfg)
        if args.launcher != "none":
            changes += init_cpu_distributed(cfg)
        for change in changes:
            print_log(f"CPU run: {change}", logger="current")
    return cfg


def run(cfg: Config, mode: str) -> None:
    """Builds the Runner of ``cfg`` (``runner_type`` if the config names one) and runs ``mode`` (``'train'`` or
    ``'test'``).

    Checkpoints load with ``weights_only=True`` and the mmengine allow-list (docs/reliability.md). A stop of
    ``kat_backbones.NonFiniteLossHook`` exits with its own status (3), so that schedulers don't just retry; a stop of
    ``kat_backbones.PreemptionHook`` (SIGTERM/SIGUSR1, checkpoint written) with 75, so that they do. At the end
    the Runner (its DDP wrapper) is freed and then the process group, else gloo can abort at exit under torchrun.
    """
    if mode not in ("train", "test"):
        raise ValueError(f"mode must be 'train' or 'test', got {mode!r}")
    install_safe_checkpoint_loading()
    runner = Runner.from_cfg(cfg) if "runner_type" not in cfg else RUNNERS.build(cfg)
    try:
        getattr(runner, mode)()
    except NonFiniteLossError as err:  # logged by the hook
        raise SystemExit(NONFINITE_LOSS_EXIT_CODE) from err
    except PreemptedError as err:  # checkpoint written (logged by the hook); tools/slurm_train.sh requeues on it
        raise SystemExit(PREEMPTED_EXIT_CODE) from err
    finally:
        close_run(runner)  # work-dir lock, signal handlers: also when the run ended with an exception
        del runner
        destroy_distributed()
