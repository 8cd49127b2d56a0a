#!/usr/bin/env python
"""Small CUDA run of every kernel path, for compute-sanitizer (tools/gpu_check.sh) and quick manual checks.

Covers: the (5, 4) fast path and generic orders, 16-byte vector and scalar paths (odd span, misaligned storage),
channels-first layout, all four dtypes, every backward output mask. Compares with the CPU kernels.
"""

from __future__ import annotations

import itertools
import sys

import torch

from kat_backbones.ops import group_rational

OPS = torch.ops.kat_backbones


def main() -> int:
    torch.manual_seed(0)
    cases = [((3, 17, 64), -1, 8, 5, 4), ((2, 9, 72), -1, 8, 3, 2), ((2, 16, 5, 3), 1, 4, 5, 4),
             ((1, 1, 8), -1, 8, 1, 1)]
    worst = 0.0
    for (shape, cd, g, m, n), dtype, offset in itertools.product(
            cases, (torch.float32, torch.float64, torch.float16, torch.bfloat16), (0, 1)):
        numel = torch.Size(shape).numel()
        x = (torch.randn(numel + offset) * 2)[offset:].view(shape).to(dtype)
        num = (torch.randn(g, m + 1) * 0.3).to(dtype)
        den = (torch.randn(g, n) * 0.3).to(dtype)
        gy = torch.randn(shape).to(dtype)
        y_cpu = group_rational(x, num, den, channel_dim=cd)
        y = group_rational(x.cuda(), num.cuda(), den.cuda(), channel_dim=cd)
        worst = max(worst, (y.cpu().double() - y_cpu.double()).abs().max().item())
        for mask in itertools.product((False, True), repeat=3):
            ref = OPS.group_rational_bwd(gy, x, num, den, cd % len(shape), list(mask))
            out = OPS.group_rational_bwd(gy.cuda(), x.cuda(), num.cuda(), den.cuda(), cd % len(shape), list(mask))
            for a, b in zip(ref, out):
                if a.numel():
                    scale = a.double().abs().max().item() + 1.0
                    worst = max(worst, (a.double() - b.cpu().double()).abs().max().item() / scale)
    torch.cuda.synchronize()
    print(f"cuda smoke: {len(cases) * 8} cases x 8 masks, worst difference vs CPU {worst:.3g}")
    return 0 if worst < 5e-2 else 1


if __name__ == "__main__":
    sys.exit(main())
