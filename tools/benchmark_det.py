"""Mask R-CNN training-iteration time: KAT backbone vs its ViT baseline, measured in the same run.

    python tools/benchmark_det.py                                  # kat_t vs vit_t Mask R-CNN, 256 px, batch 2
    python tools/benchmark_det.py --size 512 --batch 2 --threads 1
    python tools/benchmark_det.py --configs configs/mmdet/kat_b_maskrcnn.py configs/mmdet/vit_b_maskrcnn.py

Both detectors are built from the configs (recipe heads, RoI counts and optimizer: AdamW + layer decay; no
pretrained weights; on CPU OptimWrapper instead of AmpOptimWrapper) at ``--size`` (backbone ``img_size``, fixed-size
padding) and trained on the same packed batch from ``mmdet.testing.demo_mm_inputs``. One iteration = data
preprocessor + loss forward + backward + optimizer step. Timings are medians of ``torch.utils.benchmark`` blocked
auto-ranges (wall clock, or with ``--timer process`` this process's CPU time), alternated between the two models for
``--rounds`` rounds (CUDA: synchronised per iteration). The backbone alone (forward + backward) is timed the same
way. Printed: both times and the ratio first / second (target for KAT vs ViT: <= 1.10).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import timeit
from pathlib import Path
from typing import Callable

import torch
from torch.utils.benchmark import Timer

REPO = Path(__file__).resolve().parents[1]
DEFAULT_CONFIGS = [str(REPO / "configs/mmdet/kat_t_maskrcnn.py"), str(REPO / "configs/mmdet/vit_t_maskrcnn.py")]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", nargs=2, default=DEFAULT_CONFIGS, metavar="CONFIG",
                        help="two detector configs; the ratio is first / second (default: kat_t vs vit_t)")
    parser.add_argument("--size", type=int, default=256, help="square image size (default: 256)")
    parser.add_argument("--batch", type=int, default=2, help="images per iteration (default: 2)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu",
                        help="cpu or cuda (default: cuda when available)")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads on CPU (default: torch's)")
    parser.add_argument("--rounds", type=int, default=3, help="alternating timing rounds per model (default: 3)")
    parser.add_argument("--min-run-time", type=float, default=2.0, help="seconds per blocked_autorange (default: 2)")
    parser.add_argument("--timer", choices=["wall", "process"], default="wall",
                        help="wall clock, or this process's CPU time (CPU only; with --threads 1 it is the compute "
                        "time, unaffected by other load on a shared machine) (default: wall)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    return parser.parse_args(argv)


def build(config: str, size: int, device: str):
    """Detector + optimizer wrapper of ``config`` at ``size`` (no pretrained weights)."""
    from mmengine.config import Config
    from mmengine.optim import build_optim_wrapper
    from mmengine.registry import init_default_scope

    from kat_backbones.mm import convert_cfg_for_cpu

    cfg = Config.fromfile(config)
    init_default_scope(cfg.get("default_scope", "mmdet"))
    from mmdet.registry import MODELS

    model_cfg = cfg.model
    model_cfg.backbone.img_size = (size, size)
    model_cfg.backbone.init_cfg = None
    for aug in model_cfg.data_preprocessor.get("batch_augments") or []:
        aug["size"] = (size, size)
    if device == "cpu":
        convert_cfg_for_cpu(cfg)
    model = MODELS.build(model_cfg)
    model.init_weights()
    model.to(device).train()
    optim_wrapper = build_optim_wrapper(model, cfg.optim_wrapper)
    return model, optim_wrapper


def make_batch(size: int, batch: int, seed: int):
    from mmdet.testing import demo_mm_inputs

    torch.manual_seed(seed)
    return demo_mm_inputs(batch, [[3, size, size]] * batch, num_items=[4] * batch, num_classes=80, with_mask=True)


def train_step_fn(model, optim_wrapper, packed, device: str) -> Callable[[], None]:
    def step() -> None:
        # mmengine's own train step: data preprocessor, loss forward, parse losses, backward + optimizer step
        model.train_step(packed, optim_wrapper)
        if device == "cuda":
            torch.cuda.synchronize()

    return step


def backbone_step_fn(model, packed, device: str) -> Callable[[], None]:
    inputs = model.data_preprocessor(packed, True)["inputs"]

    def step() -> None:
        feats = model.backbone(inputs)
        sum(f.float().mean() for f in feats).backward()
        if device == "cuda":
            torch.cuda.synchronize()

    return step


def alternate(
    fns: list[Callable[[], None]], rounds: int, min_run_time: float, timer: Callable[[], float] = timeit.default_timer
) -> list[float]:
    """Median seconds per call of each function, timed in alternation."""
    for fn in fns:  # warm-up (allocator, lazy inits, autotuning)
        fn()
        fn()
    medians: list[list[float]] = [[] for _ in fns]
    for _ in range(rounds):
        for i, fn in enumerate(fns):
            timed = Timer(stmt="fn()", globals={"fn": fn}, timer=timer)
            measurement = timed.blocked_autorange(min_run_time=min_run_time)
            medians[i].append(measurement.median)
    return [statistics.median(m) for m in medians]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    import kat_backbones  # noqa: F401  (registers the kat_backbones scope)

    names = [Path(c).stem for c in args.configs]
    packed = make_batch(args.size, args.batch, args.seed)
    models, train_steps, backbone_steps = [], [], []
    for config in args.configs:
        torch.manual_seed(args.seed)
        model, optim_wrapper = build(config, args.size, args.device)
        models.append(model)
        train_steps.append(train_step_fn(model, optim_wrapper, packed, args.device))
        backbone_steps.append(backbone_step_fn(model, packed, args.device))

    if args.timer == "process" and args.device != "cpu":
        raise SystemExit("benchmark_det: --timer process measures CPU time; use it with --device cpu")
    timer = time.process_time if args.timer == "process" else timeit.default_timer
    train = alternate(train_steps, args.rounds, args.min_run_time, timer)
    backbone = alternate(backbone_steps, args.rounds, args.min_run_time, timer)

    device = torch.cuda.get_device_name() if args.device == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"Mask R-CNN train iteration, {args.batch}x3x{args.size}x{args.size}, {device}, {args.timer} time, "
          f"torch {torch.__version__}")
    print(f"{'config':<24}{'params (M)':>12}{'backbone (M)':>14}{'train iter (ms)':>18}{'backbone f+b (ms)':>20}")
    for name, model, t, b in zip(names, models, train, backbone):
        params = sum(p.numel() for p in model.parameters()) / 1e6
        bb_params = sum(p.numel() for p in model.backbone.parameters()) / 1e6
        print(f"{name:<24}{params:>12.2f}{bb_params:>14.2f}{t * 1e3:>18.1f}{b * 1e3:>20.1f}")
    print(f"ratio {names[0]} / {names[1]}: train iteration {train[0] / train[1]:.3f}x (target <= 1.10), "
          f"backbone fwd+bwd {backbone[0] / backbone[1]:.3f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
