"""Benchmark of the group-rational op: compiled kernels vs the eager reference and torch.compile(reference).

Prints one table row per backend x dtype x shape: forward and forward+backward time, effective GB/s (bytes that
must move: forward reads x and writes y; backward reads grad and x and writes dx), and the speed-up over the eager
PyTorch reference and over ``torch.compile(reference)``, all measured in the same run. On CUDA it also measures the
device's copy bandwidth and reports each row as a fraction of it.

    python tools/benchmark_rational.py                       # CPU (and CUDA when present), default shapes
    python tools/benchmark_rational.py --device cpu --dtypes float32 --shapes 128x197x768
"""

from __future__ import annotations

import argparse
import platform
import sys

import torch
import torch.utils.benchmark as tb

from kat_backbones.ops import available_backends, group_rational, group_rational_reference

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16, "float64": torch.float64}


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", choices=["cpu", "cuda", "all"], default="all")
    p.add_argument("--dtypes", nargs="+", default=["float32", "bfloat16"], choices=list(DTYPES))
    p.add_argument("--shapes", nargs="+", default=["128x197x768", "64x1024x3072"],
                   help="token shapes BxLxC (channels last)")
    p.add_argument("--groups", type=int, default=8)
    p.add_argument("--min-run-time", type=float, default=1.0, help="seconds per measurement (CPU)")
    p.add_argument("--no-compile", action="store_true", help="skip the torch.compile(reference) baseline")
    return p.parse_args()


def timeit(fn, device: str, min_run_time: float) -> float:
    """Median seconds per call."""
    fn()  # warm-up (and compilation)
    if device == "cuda":
        try:
            from triton.testing import do_bench

            return do_bench(fn, warmup=25, rep=100, return_mode="median") / 1e3
        except ImportError:
            pass
        torch.cuda.synchronize()
    return tb.Timer(stmt="fn()", globals={"fn": fn}).blocked_autorange(min_run_time=min_run_time).median


def copy_bandwidth(device: str, numel: int, dtype: torch.dtype, min_run_time: float) -> float:
    src = torch.randn(numel, device=device).to(dtype)
    dst = torch.empty_like(src)
    t = timeit(lambda: dst.copy_(src), device, min_run_time)
    return 2 * src.numel() * src.element_size() / t / 1e9


def bench_case(device, dtype, shape, groups, min_run_time, with_compile):
    x = torch.randn(shape, device=device).to(dtype).requires_grad_(True)
    num = torch.randn(1, 6, device=device).mul_(0.2).requires_grad_(True)
    den = torch.randn(groups, 4, device=device).mul_(0.2).requires_grad_(True)
    if dtype == torch.float64:  # KAT keeps fp32 coefficients; a float64 x needs float64 ones
        num, den = (t.detach().double().requires_grad_(True) for t in (num, den))
    gy = torch.randn(shape, device=device).to(dtype)
    def fwd(f):
        def run():
            with torch.no_grad():
                f(x, num, den)
        return run

    def fwd_bwd(f):
        def run():
            y = f(x, num, den)
            torch.autograd.grad(y, (x, num, den), gy)
        return run

    res = {}
    for name, f in (("ours", group_rational), ("eager", group_rational_reference)):
        res[name] = (timeit(fwd(f), device, min_run_time), timeit(fwd_bwd(f), device, min_run_time))
    if with_compile:
        # A fresh compilation per case and per grad mode: one shared compiled function would recompile for each
        # dtype/shape/grad-mode and, past dynamo's recompile limit, silently run eager.
        times = []
        for mode in (fwd, fwd_bwd):
            torch._dynamo.reset()
            times.append(timeit(mode(torch.compile(group_rational_reference, dynamic=False)), device, min_run_time))
        res["compiled"] = tuple(times)
    numel, es = x.numel(), x.element_size()
    gbs = (2 * numel * es / res["ours"][0] / 1e9, 5 * numel * es / res["ours"][1] / 1e9)
    return res, gbs


def main() -> int:
    args = parse_args()
    devices = ["cpu", "cuda"] if args.device == "all" else [args.device]
    devices = [d for d in devices if d in available_backends() and (d == "cpu" or torch.cuda.is_available())]
    print(f"# torch {torch.__version__}, backends {available_backends()}, {platform.processor() or platform.machine()},"
          f" {torch.get_num_threads()} CPU threads" + (f", GPU {torch.cuda.get_device_name()}"
                                                         if torch.cuda.is_available() else ", no GPU"))
    header = ("| device | dtype | shape | fwd ms | fwd GB/s | fwd vs eager | fwd vs compile | fwd+bwd ms "
              "| fwd+bwd GB/s | fwd+bwd vs eager | fwd+bwd vs compile | fwd % copy BW | fwd+bwd % copy BW |")
    print(header)
    print("|" + "|".join(["---"] * (header.count("|") - 1)) + "|")
    for device in devices:
        for dname in args.dtypes:
            dtype = DTYPES[dname]
            for s in args.shapes:
                shape = tuple(int(v) for v in s.split("x"))
                res, gbs = bench_case(device, dtype, shape, args.groups, args.min_run_time, not args.no_compile)
                ours, eager = res["ours"], res["eager"]
                comp = res.get("compiled")
                bw = copy_bandwidth(device, shape[0] * shape[1] * shape[2], dtype, args.min_run_time) \
                    if device == "cuda" else None
                cells = [device, dname, s, f"{ours[0] * 1e3:.2f}", f"{gbs[0]:.1f}", f"{eager[0] / ours[0]:.1f}x",
                         f"{comp[0] / ours[0]:.2f}x" if comp else "-", f"{ours[1] * 1e3:.2f}", f"{gbs[1]:.1f}",
                         f"{eager[1] / ours[1]:.1f}x", f"{comp[1] / ours[1]:.2f}x" if comp else "-",
                         f"{100 * gbs[0] / bw:.0f}%" if bw else "-", f"{100 * gbs[1] / bw:.0f}%" if bw else "-"]
                print("| " + " | ".join(cells) + " |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
