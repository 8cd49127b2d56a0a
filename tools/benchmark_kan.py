#!/usr/bin/env python
"""The GR-KAN layer against the ViT MLP, and the rational's per-call overhead against GELU, ratios in one run.

1. Per-call overhead: one ``GroupRational`` forward on a small (1, 197, 192) token tensor (KAT-T batch 1) vs
   ``nn.GELU``, and the functional ``group_rational`` (argument checks on every call) for comparison.
2. Layer: LayerNorm + MLP (Linear-GELU-Linear, timm ``Mlp``) vs LayerNorm + GR-KAN (``KAN.forward_with_norm``) in
   each implementation (``unfused``, ``fused``, and ``triton`` where Triton runs), forward and forward+backward, at
   KAT-T (C = 192) and KAT-B (C = 768) widths, hidden 4C. Ratios to the MLP are printed.

    python tools/benchmark_kan.py --device cpu --threads 1 --tokens 8x197       # CPU
    python tools/benchmark_kan.py --device cuda --amp                             # GPU, bf16 autocast, 128x197

CPU times: ``torch.utils.benchmark`` medians; ``--timer proc`` (for a busy machine, with ``--threads 1``): process CPU
time, the fastest of repeated batches of calls. CUDA times: ``triton.testing.do_bench`` medians.
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from functools import partial

import torch
import torch.utils.benchmark as tb
from timm.layers import Mlp

from kat_backbones.layers import KAN, GroupRational
from kat_backbones.ops import group_rational
from kat_backbones.ops.fused_kan import triton_usable


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", choices=("cpu", "cuda"), default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--tokens", default=None, help="BxN tokens of the layer rows (default: 128x197 CUDA, 8x197 CPU)")
    p.add_argument("--dims", type=int, nargs="+", default=[192, 768], help="widths C (hidden 4C; default 192 768)")
    p.add_argument("--impls", nargs="+", default=["unfused", "fused", "triton"],
                   choices=("unfused", "fused", "triton"), help="KAN implementations to time")
    p.add_argument("--amp", action="store_true", help="bf16 autocast (as in training)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--timer", choices=("wall", "proc"), default="wall", help="CPU: wall clock or process CPU time")
    p.add_argument("--min-run-time", type=float, default=1.0, help="seconds per CPU measurement")
    p.add_argument("--no-overhead", action="store_true", help="skip the per-call overhead measurement")
    return p.parse_args(argv)


def timeit(fn, args: argparse.Namespace) -> float:
    """Median seconds per call of fn."""
    fn()
    if args.device == "cuda":
        from triton.testing import do_bench

        return do_bench(fn, warmup=25, rep=200, return_mode="median") / 1e3
    if args.timer == "proc":  # batches of >= ~2 ms of calls; the fastest batch (least disturbed by other load)
        t0 = time.process_time()
        fn()
        calls = max(1, int(2e-3 / max(time.process_time() - t0, 1e-7)))
        best, end = float("inf"), time.perf_counter() + args.min_run_time
        while time.perf_counter() < end or best == float("inf"):
            t0 = time.process_time()
            for _ in range(calls):
                fn()
            best = min(best, (time.process_time() - t0) / calls)
        return best
    return tb.Timer(stmt="fn()", globals={"fn": fn}).blocked_autorange(min_run_time=args.min_run_time).median


def overhead(args: argparse.Namespace) -> None:
    dev = torch.device(args.device)
    x = torch.randn(1, 197, 192, device=dev)
    rational = GroupRational(8, init="swish").to(dev)
    gelu = torch.nn.GELU()
    num, den = rational.weight_numerator.detach(), rational.weight_denominator.detach()
    with torch.no_grad():
        t_gelu = timeit(lambda: gelu(x), args)
        t_mod = timeit(lambda: rational(x), args)
        t_fn = timeit(lambda: group_rational(x, num, den), args)
    print(f"\n## per-call overhead, (1, 197, 192) {args.device} float32, forward (no grad)")
    print("| call | us | vs GELU |\n|---|---|---|")
    for name, t in (("nn.GELU", t_gelu), ("GroupRational module", t_mod), ("group_rational function", t_fn)):
        print(f"| {name} | {t * 1e6:.1f} | {t / t_gelu:.2f}x |")


def layer_runs(dim: int, impl: str | None, tokens: tuple[int, int], args: argparse.Namespace):
    """(forward, forward+backward) closures for LayerNorm + MLP (impl None) or LayerNorm + KAN(kan_impl=impl)."""
    torch.manual_seed(0)
    dev = torch.device(args.device)
    norm = torch.nn.LayerNorm(dim, eps=1e-6).to(dev)
    if impl is None:
        mlp = Mlp(dim, 4 * dim, act_layer=torch.nn.GELU).to(dev)
        run = lambda x: mlp(norm(x))  # noqa: E731
    else:
        mlp = KAN(dim, 4 * dim, kan_impl=impl).to(dev)
        run = partial(mlp.forward_with_norm, norm=norm)
    x = torch.randn(*tokens, dim, device=dev, requires_grad=True)
    gy = torch.randn(*tokens, dim, device=dev)
    params = [x, *norm.parameters(), *mlp.parameters()]
    amp = partial(torch.autocast, dev.type, dtype=torch.bfloat16, enabled=args.amp)

    def fwd():
        with torch.no_grad(), amp():
            run(x)

    def fwd_bwd():
        with amp():
            y = run(x)
        torch.autograd.grad(y, params, gy.to(y.dtype))

    return fwd, fwd_bwd


def layers(args: argparse.Namespace) -> None:
    tokens = tuple(int(v) for v in (args.tokens or ("128x197" if args.device == "cuda" else "8x197")).split("x"))
    impls = [i for i in args.impls if i != "triton" or triton_usable(torch.device(args.device))]
    skipped = sorted(set(args.impls) - set(impls))
    print(f"\n## LayerNorm + MLP vs LayerNorm + GR-KAN, tokens {tokens}, {args.device}, "
          f"{'bf16 autocast' if args.amp else 'float32'}" + (f" (skipped, Triton unusable here: {skipped})"
                                                             if skipped else ""))
    print("| C | hidden | layer | fwd ms | fwd vs MLP | fwd+bwd ms | fwd+bwd vs MLP |\n|---|---|---|---|---|---|---|")
    for dim in args.dims:
        base = None
        for impl in [None, *impls]:
            fwd, fwd_bwd = layer_runs(dim, impl, tokens, args)
            t = (timeit(fwd, args), timeit(fwd_bwd, args))
            base = base or t
            name = "MLP (Linear-GELU-Linear)" if impl is None else f"KAN {impl}"
            print(f"| {dim} | {4 * dim} | {name} | {t[0] * 1e3:.3f} | {t[0] / base[0]:.3f}x | {t[1] * 1e3:.3f} | "
                  f"{t[1] / base[1]:.3f}x |", flush=True)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    gpu = f", GPU {torch.cuda.get_device_name()}" if args.device == "cuda" else ""
    print(f"# torch {torch.__version__}, {platform.processor() or platform.machine()}, "
          f"{torch.get_num_threads()} CPU threads, timer {'do_bench' if gpu else args.timer}{gpu}")
    if not args.no_overhead:
        overhead(args)
    layers(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
