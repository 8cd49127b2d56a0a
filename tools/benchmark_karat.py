#!/usr/bin/env python
"""Memory and time of one Fourier-KArAt transformer block: memory-lean operator vs the naive one (vs softmax).

    python tools/benchmark_karat.py                       # KAT-T block (192 wide, 3 heads), N=197, batch 8, G=3, r=12
    python tools/benchmark_karat.py --heads 12 --dim 768 --grid 1
    python tools/benchmark_karat.py --init-study          # paper's N(0, 1) init vs the variance-preserving default

The block is timm's ViT ``Block`` with the GR-KAN MLP (:class:`kat_backbones.layers.KAN`) and
:class:`kat_backbones.layers.KArAtAttention`; ``lean`` computes Phi with :func:`~kat_backbones.layers.karat.
fourier_rows` (saves only the logits, recomputes the harmonics in backward), ``naive`` with
:func:`~kat_backbones.layers.karat.fourier_rows_reference` (materialises the (B, h, N, N, 2G) features), ``softmax``
is the same block with timm's softmax attention (for scale).

Memory, in a fresh subprocess (CPU; no torch.cuda here), the variants one after another:

- ``peak``: peak resident memory of one forward + backward above the resident memory just before it (Linux:
  ``/proc/self/clear_refs`` resets the high-water mark ``VmHWM``; glibc's ``MALLOC_MMAP_THRESHOLD_`` is fixed at
  128 KiB so that freed tensors leave the resident set at once instead of staying in the heap);
- ``saved``: bytes of the tensors autograd keeps for backward (``torch.autograd.graph.saved_tensors_hooks``,
  parameters excluded).

Time: forward + backward, ``torch.utils.benchmark.Timer.blocked_autorange`` in this process; the ratio to ``lean``
is printed in the same run.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from collections.abc import Sequence
from typing import Any

from kat_backbones.apps.memory import proc_status_kib, reset_peak_rss, saved_tensor_bytes

VARIANTS = ("lean", "naive", "softmax")
_MMAP_THRESHOLD = str(128 * 1024)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parses the command line."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokens", type=int, default=197, help="tokens N (default: 197, ViT at 224/16)")
    parser.add_argument("--batch", type=int, default=8, help="batch size (default: 8)")
    parser.add_argument("--dim", type=int, default=192, help="embedding width (default: 192, KAT-T)")
    parser.add_argument("--heads", type=int, default=3, help="heads (default: 3, KAT-T)")
    parser.add_argument("--grid", type=int, default=3, help="Fourier grid G (default: 3)")
    parser.add_argument("--rank", type=int, default=12, help="rank r (default: 12)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS))
    parser.add_argument("--no-time", action="store_true", help="memory only")
    parser.add_argument("--min-run-time", type=float, default=1.0, help="seconds per timing (default: 1)")
    parser.add_argument("--init-study", action="store_true", help="run the initialisation study instead")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--child", nargs="+", choices=VARIANTS, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def build_block(variant: str, dim: int, heads: int, tokens: int, grid: int, rank: int, init_std: float | None = None):
    """A KAT block (timm ``Block`` + GR-KAN MLP) with the given attention variant."""
    from functools import partial

    import torch
    from timm.layers import Attention
    from timm.models.vision_transformer import Block

    from kat_backbones.layers import KAN, FourierKArAt, KArAtAttention

    block = Block(dim, heads, qkv_bias=True, norm_layer=partial(torch.nn.LayerNorm, eps=1e-6), mlp_layer=KAN,
                  attn_layer=Attention)
    if variant != "softmax":
        operator = FourierKArAt(heads, tokens, grid=grid, rank=rank, init_std=init_std,
                                memory_efficient=variant == "lean")
        block.attn = KArAtAttention(dim, heads, qkv_bias=True, operator=operator)
    return block


def peak_memory_supported() -> bool:
    """Whether this OS lets a process reset its peak-RSS mark (Linux ``/proc/self/clear_refs``)."""
    return reset_peak_rss() and proc_status_kib("VmHWM") > 0


def _child(args: argparse.Namespace) -> list[dict[str, Any]]:
    """In a fresh process: peak RSS growth and saved bytes of one forward + backward, per variant in turn."""
    import gc

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    results = []
    for variant in args.child:
        torch.manual_seed(0)
        block = build_block(variant, args.dim, args.heads, args.tokens, args.grid, args.rank)
        x = torch.randn(args.batch, args.tokens, args.dim, requires_grad=True)
        block(x).sum().backward()  # warm-up: lazy allocations, thread pools, gradient buffers
        saved = saved_tensor_bytes(block, x)
        gc.collect()
        before = proc_status_kib("VmRSS")
        if not reset_peak_rss():
            raise OSError("cannot reset the peak RSS (/proc/self/clear_refs)")
        block(x).sum().backward()
        peak = proc_status_kib("VmHWM")
        results.append(dict(variant=variant, peak_bytes=max(0, peak - before) * 1024, saved_bytes=saved))
        del block, x
        gc.collect()
    return results


def measure_memory(variants: Sequence[str], tokens: int = 197, batch: int = 8, dim: int = 192, heads: int = 3,
                   grid: int = 3, rank: int = 12, threads: int | None = 1) -> dict[str, dict[str, Any]]:
    """Peak RSS growth and saved bytes of one forward + backward of each variant's block, in one fresh subprocess
    (glibc's mmap threshold fixed, so a variant's freed tensors leave the resident set before the next one)."""
    cmd = [sys.executable, os.path.abspath(__file__), "--child", *variants, "--tokens", str(tokens), "--batch",
           str(batch), "--dim", str(dim), "--heads", str(heads), "--grid", str(grid), "--rank", str(rank)]
    if threads:
        cmd += ["--threads", str(threads)]
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_=_MMAP_THRESHOLD, MALLOC_TRIM_THRESHOLD_=_MMAP_THRESHOLD)
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env["PYTHONPATH"] = repo + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    if proc.returncode != 0:
        raise RuntimeError(f"benchmark_karat child failed: {proc.stderr[-2000:]}")
    return {r["variant"]: r for r in json.loads(proc.stdout.strip().splitlines()[-1])}


def measure_time(variant: str, args: argparse.Namespace) -> float:
    """Median seconds of forward + backward."""
    import torch
    from torch.utils.benchmark import Timer

    torch.manual_seed(0)
    block = build_block(variant, args.dim, args.heads, args.tokens, args.grid, args.rank)
    x = torch.randn(args.batch, args.tokens, args.dim, requires_grad=True)

    def step() -> None:
        block(x).sum().backward()

    step()
    return Timer(stmt="step()", globals={"step": step}).blocked_autorange(min_run_time=args.min_run_time).median


def init_study(args: argparse.Namespace) -> dict[str, Any]:
    """KAT-T with Fourier-KArAt at init: activation scale through the 12 blocks and 5 AdamW steps, per init."""
    import timm
    import torch

    import kat_backbones  # noqa: F401  (registers the KAT models)

    results = {}
    for name, init_std in (("KArAt, paper N(0,1)", 1.0), ("KArAt, variance-preserving", None), ("softmax", "-")):
        torch.manual_seed(0)
        karat = {} if init_std == "-" else dict(
            attn_type="fourier_karat", attn_cfg=dict(grid=args.grid, rank=args.rank, init_std=init_std))
        model = timm.create_model("kat_tiny_patch16_224", num_classes=10, **karat)
        x = torch.randn(4, 3, 224, 224)
        y = torch.randint(0, 10, (4,))
        stds: list[float] = []

        def record(module, inputs, output, stds=stds) -> None:
            stds.append(float(output.float().std()))

        hooks = [blk.attn.register_forward_hook(record) for blk in model.blocks]
        with torch.no_grad():
            feats = model.forward_features(x)
        for h in hooks:
            h.remove()
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.05)
        losses, grad_norms = [], []
        for _ in range(5):
            loss = torch.nn.functional.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            grad_norms.append(float(torch.nn.utils.clip_grad_norm_(model.parameters(), float("inf"))))
            opt.step()
            losses.append(loss.item())
        results[name] = dict(attn_out_std_first=stds[0], attn_out_std_last=stds[-1], attn_out_std_max=max(stds),
                             final_tokens_std=float(feats.std()), losses=losses, grad_norms=grad_norms)
    return results


def main(argv: list[str] | None = None) -> int:
    """Runs the benchmark and prints the comparison."""
    args = parse_args(argv)
    if args.child:
        print(json.dumps(_child(args)))
        return 0
    if args.init_study:
        results = init_study(args)
        if args.json:
            print(json.dumps(results))
            return 0
        print(f"KAT-T + Fourier-KArAt (G={args.grid}, r={args.rank}) at init, batch 4 of N(0, 1) images")
        print(f"{'attention':<28} {'attn out std blk0':>18} {'blk11':>9} {'max':>9}  {'grad norm step 1':>16}  "
              f"losses (5 AdamW steps, lr 1e-3)")
        for name, r in results.items():
            losses = " ".join(f"{v:.3g}" for v in r["losses"])
            print(f"{name:<28} {r['attn_out_std_first']:>18.4g} {r['attn_out_std_last']:>9.4g} "
                  f"{r['attn_out_std_max']:>9.4g}  {r['grad_norms'][0]:>16.4g}  {losses}")
        return 0

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    shape = (f"block dim {args.dim}, {args.heads} heads, N={args.tokens}, batch {args.batch}, G={args.grid}, "
             f"r={args.rank}, fp32, {torch.get_num_threads()} threads")
    rows: dict[str, dict[str, Any]] = {}
    if peak_memory_supported():
        rows.update(measure_memory(args.variants, args.tokens, args.batch, args.dim, args.heads, args.grid,
                                   args.rank, args.threads))
    else:
        print("peak memory: not measurable here (needs Linux /proc/self/clear_refs)", file=sys.stderr)
    if not args.no_time:
        for variant in args.variants:
            rows.setdefault(variant, dict(variant=variant))["seconds"] = measure_time(variant, args)
    if args.json:
        print(json.dumps(dict(config=shape, results=rows)))
        return 0
    print(shape)
    ref = rows.get("lean", {})
    print(f"{'variant':<10} {'peak MiB':>10} {'x lean':>8} {'saved MiB':>10} {'x lean':>8} {'fwd+bwd ms':>11} "
          f"{'x lean':>8}")
    for variant, r in rows.items():
        def cell(key: str, scale: float, r=r) -> tuple[str, str]:
            if key not in r:
                return "", ""
            ratio = f"{r[key] / ref[key]:.2f}" if ref.get(key) else ""
            return f"{r[key] * scale:.1f}", ratio
        peak, peak_ratio = cell("peak_bytes", 2**-20)
        saved, saved_ratio = cell("saved_bytes", 2**-20)
        secs, secs_ratio = cell("seconds", 1e3)
        print(f"{variant:<10} {peak:>10} {peak_ratio:>8} {saved:>10} {saved_ratio:>8} {secs:>11} {secs_ratio:>8}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
