#!/usr/bin/env python
"""KAT-T vs timm ViT-Ti training step and batch-1 inference (CPU or CUDA): time and memory, compared in one run.

    python tools/benchmark_kat.py --batch 32 --steps 5
    python tools/benchmark_kat.py --device cuda --batch 128 --steps 20 --amp   # bf16 autocast on a GPU
    python tools/benchmark_kat.py --kan-impl unfused auto --threads 1 --timer proc   # before / after in one run

``--kan-impl`` builds one KAT model per GR-KAN implementation (``KAN(kan_impl=...)``); every KAT variant is
timed against the same ViT and all ratios are printed. Batch-1 inference: eval mode, no_grad, one image, the
models interleaved like the train steps (``--infer-steps 0`` skips it).

One train step = forward, cross-entropy loss, backward, AdamW step, zero_grad. Time: the models' steps are
interleaved (A B, B A, A B ...) after warm-up, so load from other processes hits both alike; the median per model
and the ratio KAT / ViT are printed. On a busy machine use ``--threads 1 --timer proc`` (CPU time of this process).

On CUDA each step is timed between synchronisations and peak memory is torch.cuda.max_memory_allocated() over two
train steps, minus the memory allocated after building (parameters + inputs).

Peak memory on CPU: each model runs in a fresh subprocess and reports the growth of its peak resident set size (VmHWM,
reset after the build) over the RSS measured after building the model and optimizer, i.e. activations + gradients +
optimizer state + allocator overhead of the train steps; the ratio KAT / ViT is printed. As a deterministic
complement, the bytes autograd saves for backward in one forward pass are counted for both models.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable

import timm
import torch

import kat_backbones  # noqa: F401  (registers the KAT models)
from kat_backbones.apps.memory import proc_status_kib, reset_peak_rss, saved_tensor_bytes


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parses the command line."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kat", default="kat_tiny_patch16_224", help="KAT model (default: kat_tiny_patch16_224)")
    parser.add_argument("--vit", default="vit_tiny_patch16_224", help="baseline (default: vit_tiny_patch16_224)")
    parser.add_argument("--kan-impl", nargs="+", default=["auto"], choices=("auto", "unfused", "fused", "triton"),
                        help="GR-KAN implementation(s) of the KAT model, one KAT variant each (default: auto)")
    parser.add_argument("--infer-steps", type=int, default=20,
                        help="timed batch-1 inference passes per model (default: 20; 0 skips)")
    parser.add_argument("--batch", type=int, default=32, help="batch size (default: 32)")
    parser.add_argument("--img-size", type=int, default=224, help="input size (default: 224)")
    parser.add_argument("--steps", type=int, default=5, help="timed steps per model (default: 5)")
    parser.add_argument("--warmup", type=int, default=2, help="warm-up steps per model (default: 2)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--timer", choices=("wall", "proc"), default="wall",
                        help="wall clock, or this process's CPU time (robust to other load; use with --threads 1)")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="device (default: cpu)")
    parser.add_argument("--amp", action="store_true", help="bfloat16 autocast for forward (CUDA and CPU)")
    parser.add_argument("--no-memory", action="store_true", help="skip the memory measurement")
    parser.add_argument("--memory-child", default=None, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def _variants(args: argparse.Namespace) -> dict[str, tuple[str, dict]]:
    """label -> (timm model name, create_model kwargs): the KAT variants (one per kan_impl), then the ViT."""
    # 'auto' is the models' default: not passed, so the tool also measures checkouts that predate kan_impl
    kats = {args.kat if len(args.kan_impl) == 1 else f"{args.kat}[{impl}]":
            (args.kat, {"kan_impl": impl} if impl != "auto" else {}) for impl in args.kan_impl}
    return {**kats, args.vit: (args.vit, {})}


def _make(label: str, args: argparse.Namespace) -> tuple[torch.nn.Module, Callable[[], None], torch.Tensor]:
    torch.manual_seed(0)
    dev = torch.device(args.device)
    name, kwargs = _variants(args)[label]
    model = timm.create_model(name, img_size=args.img_size, num_classes=1000, **kwargs).train().to(dev)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.05)
    x = torch.randn(args.batch, 3, args.img_size, args.img_size, device=dev)
    y = torch.randint(0, 1000, (args.batch,), device=dev)

    def step() -> None:
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=args.amp):
            loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if dev.type == "cuda":
            torch.cuda.synchronize()

    return model, step, x


def _memory_child(args: argparse.Namespace) -> int:
    _, step, _ = _make(args.memory_child, args)
    base = proc_status_kib("VmRSS") * 1024
    reset_peak_rss()
    for _ in range(2):
        step()
    peak = proc_status_kib("VmHWM") * 1024
    print(json.dumps({"model": args.memory_child, "base_rss": base, "peak_rss": peak, "peak_delta": peak - base}))
    return 0


def _cuda_memory(name: str, args: argparse.Namespace) -> dict:
    torch.cuda.empty_cache()
    _, step, _ = _make(name, args)
    step()  # optimizer state exists from here on
    torch.cuda.synchronize()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    for _ in range(2):
        step()
    peak = torch.cuda.max_memory_allocated()
    return {"model": name, "base_rss": base, "peak_rss": peak, "peak_delta": peak - base}


def _memory(name: str, args: argparse.Namespace) -> dict:
    if args.device == "cuda":
        return _cuda_memory(name, args)
    cmd = [sys.executable, os.path.abspath(__file__), "--memory-child", name, "--batch", str(args.batch),
           "--img-size", str(args.img_size), "--kat", args.kat, "--vit", args.vit, "--kan-impl", *args.kan_impl] + (
        ["--amp"] if args.amp else [])
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    """Runs the comparison and prints it."""
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.memory_child:
        return _memory_child(args)

    print(f"torch {torch.__version__}, timm {timm.__version__}, threads {torch.get_num_threads()}, "
          f"batch {args.batch}, img {args.img_size}, device {args.device}"
          + (f" ({torch.cuda.get_device_name()})" if args.device == "cuda" else "")
          + f", amp {'bf16' if args.amp else 'off'}, timer {args.timer}")
    if args.device == "cuda" and args.timer == "proc":
        raise SystemExit("--timer proc measures CPU time; use the wall clock with --device cuda")
    labels = list(_variants(args))
    kats, vit = labels[:-1], labels[-1]
    built = {label: _make(label, args) for label in labels}
    for _ in range(args.warmup):
        for _, step, _ in built.values():
            step()
    clock = time.process_time if args.timer == "proc" else time.perf_counter
    sync = torch.cuda.synchronize if args.device == "cuda" else (lambda: None)
    times = _interleaved({label: step for label, (_, step, _) in built.items()}, args.steps, clock)
    _report("train step", times, kats, vit)

    saved = {label: saved_tensor_bytes(model, x) for label, (model, _, x) in built.items()}
    for label, nbytes in saved.items():
        print(f"{label:<34} activations saved for backward: {nbytes / 2**20:8.1f} MiB")
    for kat in kats:
        print(f"activation memory ratio {kat} / {vit}: {saved[kat] / saved[vit]:.3f}x")

    if args.infer_steps > 0:
        dev = torch.device(args.device)
        image = torch.randn(1, 3, args.img_size, args.img_size, device=dev)

        def infer(model: torch.nn.Module) -> Callable[[], None]:
            def run() -> None:
                with torch.no_grad(), torch.autocast(dev.type, dtype=torch.bfloat16, enabled=args.amp):
                    model(image)
                sync()
            return run

        runs = {label: infer(model.eval()) for label, (model, _, _) in built.items()}
        for _ in range(max(args.warmup, 1)):
            for run in runs.values():
                run()
        _report("batch-1 inference", _interleaved(runs, args.infer_steps, clock), kats, vit)

    if not args.no_memory:
        del built
        mem = {label: _memory(label, args) for label in labels}
        for label, m in mem.items():
            what = "peak CUDA memory" if args.device == "cuda" else "peak RSS"
            print(f"{label:<34} {what} growth over a train step: {m['peak_delta'] / 2**20:8.1f} MiB "
                  f"({what} {m['peak_rss'] / 2**20:.1f} MiB)")
        for kat in kats:
            print(f"peak memory ratio {kat} / {vit}: {mem[kat]['peak_delta'] / mem[vit]['peak_delta']:.3f}x")
    return 0


def _interleaved(runs: dict[str, Callable[[], None]], steps: int, clock: Callable[[], float]) -> dict[str, list]:
    """Seconds per call of each run, the runs alternating so background load hits all alike; the order is reversed
    every other round (A B C, C B A, ...) so that no run always follows the same one (cache effects)."""
    times: dict[str, list[float]] = {label: [] for label in runs}
    for i in range(steps):
        for label, run in (runs.items() if i % 2 == 0 else reversed(runs.items())):
            start = clock()
            run()
            times[label].append(clock() - start)
    return times


def _report(what: str, times: dict[str, list[float]], kats: list[str], vit: str) -> None:
    med = {label: statistics.median(t) for label, t in times.items()}
    for label, t in times.items():
        print(f"{label:<34} {what}: median {med[label] * 1e3:8.2f} ms  (min {min(t) * 1e3:.2f}, "
              f"max {max(t) * 1e3:.2f}, {len(t)} runs)")
    for kat in kats:
        paired = statistics.median(k / v for k, v in zip(times[kat], times[vit]))
        print(f"{what} time ratio {kat} / {vit}: {med[kat] / med[vit]:.3f}x (medians), "
              f"{paired:.3f}x (median of back-to-back pairs), {min(times[kat]) / min(times[vit]):.3f}x (minima)")


if __name__ == "__main__":
    sys.exit(main())
