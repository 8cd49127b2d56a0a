#!/usr/bin/env python
"""KAT-T vs timm ViT-Ti training step (CPU or CUDA): time and peak memory, compared in the same run.

    python tools/benchmark_kat.py --batch 32 --steps 5
    python tools/benchmark_kat.py --device cuda --batch 128 --steps 20 --amp   # bf16 autocast on a GPU

One train step = forward, cross-entropy loss, backward, AdamW step, zero_grad. Time: the two models' steps are
interleaved (A B A B ...) after warm-up, so load from other processes hits both alike; the median per model and the
ratio KAT / ViT are printed. On a busy machine use ``--threads 1 --timer proc`` (CPU time of this process).

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


def _make(name: str, args: argparse.Namespace) -> tuple[torch.nn.Module, Callable[[], None], torch.Tensor]:
    torch.manual_seed(0)
    dev = torch.device(args.device)
    model = timm.create_model(name, img_size=args.img_size, num_classes=1000).train().to(dev)
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
           "--img-size", str(args.img_size)] + (["--amp"] if args.amp else [])
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
    built = {name: _make(name, args) for name in (args.kat, args.vit)}
    for _ in range(args.warmup):
        for _, step, _ in built.values():
            step()
    clock = time.process_time if args.timer == "proc" else time.perf_counter
    times: dict[str, list[float]] = {name: [] for name in built}
    for _ in range(args.steps):
        for name, (_, step, _) in built.items():
            start = clock()
            step()
            times[name].append(clock() - start)
    med = {name: statistics.median(t) for name, t in times.items()}
    for name, t in times.items():
        print(f"{name:<28} train step: median {med[name] * 1e3:8.1f} ms  (min {min(t) * 1e3:.1f}, "
              f"max {max(t) * 1e3:.1f}, {len(t)} steps)")
    paired = statistics.median(k / v for k, v in zip(times[args.kat], times[args.vit]))
    print(f"time ratio {args.kat} / {args.vit}: {med[args.kat] / med[args.vit]:.3f}x (medians), "
          f"{paired:.3f}x (median of back-to-back pairs), "
          f"{min(times[args.kat]) / min(times[args.vit]):.3f}x (minima)")

    saved = {name: saved_tensor_bytes(model, x) for name, (model, _, x) in built.items()}
    for name, nbytes in saved.items():
        print(f"{name:<28} activations saved for backward: {nbytes / 2**20:8.1f} MiB")
    print(f"activation memory ratio {args.kat} / {args.vit}: {saved[args.kat] / saved[args.vit]:.3f}x")

    if not args.no_memory:
        del built
        mem = {name: _memory(name, args) for name in (args.kat, args.vit)}
        for name, m in mem.items():
            what = "peak CUDA memory" if args.device == "cuda" else "peak RSS"
            print(f"{name:<28} {what} growth over a train step: {m['peak_delta'] / 2**20:8.1f} MiB "
                  f"({what} {m['peak_rss'] / 2**20:.1f} MiB)")
        print(f"peak memory ratio {args.kat} / {args.vit}: "
              f"{mem[args.kat]['peak_delta'] / mem[args.vit]['peak_delta']:.3f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
