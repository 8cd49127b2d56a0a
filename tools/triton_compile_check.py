#!/usr/bin/env python
"""Compile the fused GR-KAN Triton kernels for an NVIDIA architecture without a GPU (Triton's own ptxas).

The interpreter (``TRITON_INTERPRET=1``) checks what the kernels compute; this checks that the real backend accepts
them: every kernel variant the layer launches (dtypes, LayerNorm on/off, shared/per-group numerator, GEMM prologue and
epilogues with the tile sizes picked for KAT-T/KAT-B shapes) is lowered to a cubin, and register spills are reported.

    python tools/triton_compile_check.py                   # sm_90, all dtypes
    python tools/triton_compile_check.py --arch 80 --dtypes bfloat16
"""

from __future__ import annotations

import argparse
import importlib.util
import itertools
import os
import sys
from pathlib import Path

import torch

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16, "float64": torch.float64}
_PTR = {torch.float32: "*fp32", torch.bfloat16: "*bf16", torch.float16: "*fp16", torch.float64: "*fp64"}


def _compiled_kernels():
    """kat_backbones.ops.triton_kan with JIT (not interpreted) kernels, whatever TRITON_INTERPRET says."""
    path = Path(__file__).resolve().parents[1] / "kat_backbones" / "ops" / "triton_kan.py"
    saved = os.environ.pop("TRITON_INTERPRET", None)
    try:
        spec = importlib.util.spec_from_file_location("_triton_kan_compile_check", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        if saved is not None:
            os.environ["TRITON_INTERPRET"] = saved
    return module


def variants(dtypes: list[torch.dtype]):
    """(name, kernel attribute, signature, constexprs, num_warps, num_stages) of every launched kernel variant."""
    tk = _compiled_kernels()
    for dtype in dtypes:
        x, is64 = _PTR[dtype], dtype == torch.float64
        math = "*fp64" if is64 else "*fp32"
        for has_ln, shared in itertools.product((True, False), (True, False)):
            block_m, block_c, warps = tk._ln_block(768, dtype)
            sig = dict(X=x, LW=x, LB=x, NUM=math, DEN=math, Y=x, MEAN=math, RSTD=math, M="i32", C="i32", GS="i32",
                       eps="fp32")
            yield (f"ln_rational_fwd {dtype} ln={has_ln} shared={shared}", tk._ln_rational_fwd_kernel, sig,
                   dict(M_ORD=5, N_ORD=4, SHARED=shared, IS64=is64, STATS=True, HAS_LN=has_ln, BLOCK_M=block_m,
                        BLOCK_C=block_c), warps, 1)
            sig = dict(X=x, LW=x, LB=x, NUM=math, DEN=math, MEAN=math, RSTD=math, GY=x, DX=x, DW_PART=math,
                       DB_PART=math, COEF_PART=math, M="i32", C="i32", GS="i32", n_tiles="i32")
            yield (f"ln_rational_bwd {dtype} ln={has_ln} shared={shared}", tk._ln_rational_bwd_kernel, sig,
                   dict(M_ORD=5, N_ORD=4, SHARED=shared, IS64=is64, HAS_LN=has_ln, BLOCK_M=block_m,
                        BLOCK_C=block_c, KP=16), warps, 1)
        # (prologue, epilogue, tile inside one group, bias, (M, N, K) of KAT-T at batch 128)
        for pro, epi, bias, (m, n, k) in ((False, 1, True, (25216, 768, 192)), (False, 2, False, (25216, 768, 192)),
                                          (True, 0, False, (192, 768, 25216))):
            for group_size in ((96, 12) if epi == 2 else (None,)):  # 96: tiles inside a group; 12: per-column
                cfg = tk._mm_config(m, n, k, dtype, group_size)
                warps, stages = cfg.pop("num_warps"), cfg.pop("num_stages")
                in_group = epi == 2 and group_size % cfg["BLOCK_N"] == 0
                out = x if epi else math
                sig = dict(A=x, B=x, OUT=out, BIAS=x, NUM=math, DEN=math, Z=x, ZOUT=x, PART=math, M="i32", N="i32",
                           K="i32", GS="i32", K_SPLIT="i32", s_split="i32", s_am="i32", s_ak="i32", s_bk="i32",
                           s_bn="i32", s_om="i32", s_on="i32", s_zm="i32", s_zn="i32")
                consts = dict(HAS_BIAS=bias, PROLOGUE=pro, EPILOGUE=epi, WRITE_Z=epi == 1, TILE_IN_GROUP=in_group,
                              M_ORD=5, N_ORD=4, SHARED=True, IS64=is64, PREC="ieee", KP=16, UPCAST_DOT=False, **cfg)
                yield (f"matmul_rational {dtype} prologue={pro} epilogue={epi} in_group={in_group} {cfg}",
                       tk._matmul_rational_kernel, sig, consts, warps, stages)


def compile_all(arch: int, dtypes: list[torch.dtype], verbose: bool = True) -> list[str]:
    """Compiles every variant for sm_<arch>; returns the failures ("name: error")."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    target = GPUTarget("cuda", arch, 32)
    failures = []
    for name, fn, sig, consts, warps, stages in variants(dtypes):
        try:
            src = ASTSource(fn=fn, signature={**sig, **{k: "constexpr" for k in consts}}, constexprs=consts)
            kernel = triton.compile(src, target=target, options=dict(num_warps=warps, num_stages=stages))
            spills = ".local" in kernel.asm["ptx"]
            if verbose:
                print(f"ok   {name}  shared mem {kernel.metadata.shared} B" + ("  (local memory: spills)" if spills
                                                                             else ""))
        except Exception as err:  # report every failing variant, not only the first
            failures.append(f"{name}: {err!r}")
            if verbose:
                print(f"FAIL {name}: {err!r}")
    return failures


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--arch", type=int, default=90, help="compute capability x10 (default: 90, H100/H200)")
    p.add_argument("--dtypes", nargs="+", default=list(DTYPES), choices=list(DTYPES))
    args = p.parse_args(argv)
    failures = compile_all(args.arch, [DTYPES[d] for d in args.dtypes])
    print(f"{len(failures)} failures")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
