"""Evaluate a trained mmdet / mmseg model (the config's test_dataloader + test_evaluator) with mmengine's Runner.

    python tools/test.py configs/mmdet/kat_t_maskrcnn.py work_dirs/kat_t_maskrcnn/iter_184375.pth
    python tools/test.py CONFIG CHECKPOINT --out results.pkl           # also dump the raw predictions
    tools/dist_test.sh CONFIG CHECKPOINT 8 [args]                      # 8 processes via torchrun

As tools/train.py: the registry scope is the config's ``default_scope``, and without CUDA (or with ``--cpu``) the
config is made CPU-runnable (SyncBN -> BN, nccl -> gloo, CPU process group under ``--launcher pytorch``); the
start-up both share is :mod:`kat_backbones.apps.runner`. A checkpoint that does not fit the config's model (another
size, task or architecture) is refused with the number of matching tensors and what is missing;
``--allow-partial-load`` evaluates it anyway (:mod:`kat_backbones.mm.fault_tolerance`).
"""

from __future__ import annotations

import argparse
import os
import sys

if __name__ == "__main__" and {"--cpu", "--cp"} & set(sys.argv[1:]):  # --cpu (or its prefix): hide the GPUs
    os.environ["CUDA_VISIBLE_DEVICES"] = ""  # before torch is imported

from mmengine.config import Config  # noqa: E402
from mmengine.logging import print_log  # noqa: E402

from kat_backbones.apps import runner  # noqa: E402
from kat_backbones.mm.fault_tolerance import add_fault_tolerance  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Test a model (mmdet / mmseg config) with mmengine's Runner")
    runner.add_common_args(parser, "test", "where to save the evaluation log (default: work_dirs/CONFIG_NAME)",
                           "test_dataloader.batch_size=1")
    parser.add_argument("checkpoint", help="checkpoint file")
    parser.add_argument("--out", help="dump the predictions to this pickle file (mmengine DumpResults)")
    return runner.parse_args(parser, argv)


def build_cfg(args: argparse.Namespace) -> Config:
    """Load the config and apply the command-line settings."""
    cfg = runner.load_config(args)
    cfg.load_from = args.checkpoint
    # a checkpoint that does not fit the model is refused (--allow-partial-load); samples that fail name their file
    for change in add_fault_tolerance(cfg, training=False, allow_partial_load=args.allow_partial_load):
        print_log(change, logger="current")
    if args.out is not None:
        if not args.out.endswith((".pkl", ".pickle")):
            raise ValueError("--out must be a .pkl or .pickle file")
        dump = dict(type="DumpResults", out_file_path=args.out)
        evaluator = cfg.test_evaluator
        cfg.test_evaluator = [*evaluator, dump] if isinstance(evaluator, (list, tuple)) else [evaluator, dump]
    return runner.make_cpu_runnable(cfg, args)


def main(argv: list[str] | None = None) -> None:
    runner.run(build_cfg(parse_args(argv)), "test")


if __name__ == "__main__":
    main()
