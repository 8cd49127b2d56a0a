"""Evaluate a trained mmdet / mmseg model (the config's test_dataloader + test_evaluator) with mmengine's Runner.

    python tools/test.py configs/mmdet/kat_t_maskrcnn.py work_dirs/kat_t_maskrcnn/iter_184375.pth
    python tools/test.py CONFIG CHECKPOINT --out results.pkl           # also dump the raw predictions
    tools/dist_test.sh CONFIG CHECKPOINT 8 [args]                      # 8 processes via torchrun

As tools/train.py: the registry scope is the config's ``default_scope``, and without CUDA (or with ``--cpu``) the
config is made CPU-runnable (SyncBN -> BN, nccl -> gloo, CPU process group under ``--launcher pytorch``).
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


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Test a model (mmdet / mmseg config) with mmengine's Runner")
    parser.add_argument("config", help="test config file path")
    parser.add_argument("checkpoint", help="checkpoint file")
    parser.add_argument("--work-dir", help="where to save the evaluation log (default: work_dirs/CONFIG_NAME)")
    parser.add_argument("--out", help="dump the predictions to this pickle file (mmengine DumpResults)")
    parser.add_argument(
        "--cfg-options",
        nargs="+",
        action=DictAction,
        help="override config settings, key=value pairs (e.g. test_dataloader.batch_size=1)",
    )
    parser.add_argument("--launcher", choices=["none", "pytorch"], default="none", help="job launcher")
    parser.add_argument("--cpu", action="store_true", help="run on CPU even when CUDA is available")
    parser.add_argument("--local_rank", "--local-rank", type=int, default=0)
    args = parser.parse_args(argv)
    if "LOCAL_RANK" not in os.environ:
        os.environ["LOCAL_RANK"] = str(args.local_rank)
    return args


def build_cfg(args: argparse.Namespace) -> Config:
    """Load the config and apply the command-line settings."""
    cfg = Config.fromfile(args.config)
    cfg.launcher = args.launcher
    if args.cfg_options is not None:
        cfg.merge_from_dict(args.cfg_options)
    if args.work_dir is not None:
        cfg.work_dir = args.work_dir
    elif cfg.get("work_dir", None) is None:
        cfg.work_dir = osp.join("./work_dirs", osp.splitext(osp.basename(args.config))[0])
    cfg.load_from = args.checkpoint

    if args.out is not None:
        if not args.out.endswith((".pkl", ".pickle")):
            raise ValueError("--out must be a .pkl or .pickle file")
        dump = dict(type="DumpResults", out_file_path=args.out)
        evaluator = cfg.test_evaluator
        cfg.test_evaluator = [*evaluator, dump] if isinstance(evaluator, (list, tuple)) else [evaluator, dump]

    if args.cpu or not torch.cuda.is_available():
        changes = convert_cfg_for_cpu(cfg)
        if args.launcher != "none":
            changes += init_cpu_distributed(cfg)
        for change in changes:
            print_log(f"CPU run: {change}", logger="current")
    return cfg


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    install_safe_checkpoint_loading()  # mmengine checkpoints with weights_only=True (docs/reliability.md)
    cfg = build_cfg(args)
    runner = Runner.from_cfg(cfg) if "runner_type" not in cfg else RUNNERS.build(cfg)
    try:
        runner.test()
    finally:
        # torchrun runs: free the Runner (its DDP wrapper) and then the process group, else gloo can abort at exit
        del runner
        destroy_distributed()


if __name__ == "__main__":
    main()
