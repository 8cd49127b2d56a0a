"""Triton kernels of the fused GR-KAN layer (LayerNorm + act1, fc1 + act2 epilogue, act2-recomputing backward).

Every rational here is THE group-rational formula of :mod:`kat_backbones.ops.reference` (``Q >= 1``, ``sign(0) = +1``
in ``dQ/dx`` and for ``sign(b_j)``, like the compiled kernels), computed in float32 (float64 for float64 tensors)
by Horner's rule (direct evaluation: in float32 with orders (5, 4), P and Q overflow for |x| beyond ~5e7 and the
result is NaN there; the compiled op's large-|x| evaluation, csrc/group_rational_large_x.h, is not mirrored here).
Channel ``c`` of a rational uses group ``c // (C / G)``. Kernels:

- :func:`ln_rational_fwd` -- per token: LayerNorm, then a rational, in one pass: ``h = F(LN(x))`` (+ mean, rstd).
- :func:`ln_rational_bwd` -- recomputes ``LN(x)`` and the rational from ``x``, mean and rstd (nothing else is kept
  from the forward) and returns dx, the LayerNorm weight/bias gradients and the coefficient gradients.
- :func:`matmul_rational` -- ``A @ B (+ bias)`` with a rational applied to B's tiles as they are loaded (prologue,
  recomputing ``F(z)`` for fc2's weight gradient) or to the output tile (epilogue: fc1 + act2 in one GEMM, or act2's
  backward ``dz = (grad @ W2) * F'(z)`` with its coefficient gradients).

Coefficient (and LayerNorm parameter) gradients are deterministic: each program writes its partial sums to its own
slot of a workspace, and the slots are added by ``torch.sum`` over a fixed layout that depends only on the shapes --
no atomics. Tile sizes are picked from the shapes (never autotuned), so the reduction order is the same in every run.

Runs on CUDA tensors, or on CPU tensors under Triton's interpreter (``TRITON_INTERPRET=1``, how the tests check
the kernels on machines without a GPU). Import fails with ImportError when Triton is not installed; see
:func:`kat_backbones.ops.fused_kan.triton_usable`.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from triton import knobs

__all__ = ["interpreting", "ln_rational_fwd", "ln_rational_bwd", "matmul_rational", "pick_tile_n"]

_MATH = {torch.float64: torch.float64}  # float16 / bfloat16 / float32 tensors are computed in float32


# Triton decides when a kernel is decorated (at this module's import) whether it runs in the interpreter.
_INTERPRET = bool(knobs.runtime.interpret)


def interpreting() -> bool:
    """True when this module's kernels run in Triton's CPU interpreter (``TRITON_INTERPRET=1`` at import)."""
    return _INTERPRET


def _math_dtype(dtype: torch.dtype) -> torch.dtype:
    return _MATH.get(dtype, torch.float32)


# ----------------------------------------------------------------------------------------------------------------
# rational helpers (device functions)


# Only Triton builtins in these kernels (tl.reduce with our own combine function, tl.full; not tl.sum, tl.zeros,
# tl.cdiv, which are themselves @jit functions of triton.language): then the kernels also run in the interpreter
# when triton.language was imported before TRITON_INTERPRET was set (as torch may do), e.g. under pytest.


@triton.jit
def _add(a, b):
    return a + b


@triton.jit
def _sum(x, axis: tl.constexpr):
    return tl.reduce(x, axis, _add)


@triton.jit
def _zeros_like(x):
    return tl.full(x.shape, 0.0, x.dtype)


@triton.jit
def _rsqrt(v, IS64: tl.constexpr):
    if IS64:
        return 1.0 / tl.sqrt(v)
    else:
        return 1.0 / tl.sqrt_rn(v)


@triton.jit
def _to_math(v, IS64: tl.constexpr):
    if IS64:
        return v.to(tl.float64)
    else:
        return v.to(tl.float32)


@triton.jit
def _rational_pq(x, NUM, DEN, nrow, drow, cmask, M_ORD: tl.constexpr, N_ORD: tl.constexpr):
    """P(x) and Q(x) by Horner; ``nrow``/``drow`` are each column's offsets of its numerator/denominator row."""
    p = _zeros_like(x) + tl.load(NUM + nrow + M_ORD, mask=cmask, other=0.0).to(x.dtype)
    for i in tl.static_range(M_ORD - 1, -1, -1):
        p = p * x + tl.load(NUM + nrow + i, mask=cmask, other=0.0).to(x.dtype)
    ax = tl.abs(x)
    q = _zeros_like(x)
    for j in tl.static_range(N_ORD - 1, -1, -1):
        q = (q + tl.abs(tl.load(DEN + drow + j, mask=cmask, other=0.0).to(x.dtype))) * ax
    return p, q + 1.0


@triton.jit
def _rational_dx(x, f, NUM, DEN, nrow, drow, cmask, M_ORD: tl.constexpr, N_ORD: tl.constexpr):
    """P'(x) - F(x) Q'(x) (multiply by 1/Q for dF/dx); ``sign(0) = +1`` in Q'."""
    dp = _zeros_like(x)
    for i in tl.static_range(M_ORD, 0, -1):
        dp = dp * x + i * tl.load(NUM + nrow + i, mask=cmask, other=0.0).to(x.dtype)
    ax = tl.abs(x)
    dq = _zeros_like(x)
    for j in tl.static_range(N_ORD, 0, -1):
        dq = dq * ax + j * tl.abs(tl.load(DEN + drow + j - 1, mask=cmask, other=0.0).to(x.dtype))
    sgn = tl.where(x < 0, -1.0, 1.0).to(x.dtype)
    return dp - f * sgn * dq


@triton.jit
def _coef_rows(cols, GS, M_ORD: tl.constexpr, N_ORD: tl.constexpr, SHARED: tl.constexpr):
    g = cols // GS
    if SHARED:
        nrow = g * 0
    else:
        nrow = g * (M_ORD + 1)
    return nrow, g * N_ORD


# ----------------------------------------------------------------------------------------------------------------
# LayerNorm + rational, one token row per tile row


@triton.jit
def _ln_rational_fwd_kernel(
    X, LW, LB, NUM, DEN, Y, MEAN, RSTD, M, C, GS, eps,
    M_ORD: tl.constexpr, N_ORD: tl.constexpr, SHARED: tl.constexpr, IS64: tl.constexpr, STATS: tl.constexpr,
    HAS_LN: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_C: tl.constexpr,
):
    pid = tl.program_id(0)
    rows = pid * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = tl.arange(0, BLOCK_C)
    rmask = rows < M
    cmask = cols < C
    mask = rmask[:, None] & cmask[None, :]
    offs = rows.to(tl.int64)[:, None] * C + cols[None, :]
    x = _to_math(tl.load(X + offs, mask=mask, other=0.0), IS64)
    if HAS_LN:
        mean = _sum(x, 1) / C
        xc = tl.where(mask, x - mean[:, None], 0.0)
        var = _sum(xc * xc, 1) / C
        rstd = _rsqrt(var + eps, IS64)
        w = _to_math(tl.load(LW + cols, mask=cmask, other=0.0), IS64)
        b = _to_math(tl.load(LB + cols, mask=cmask, other=0.0), IS64)
        u = xc * rstd[:, None] * w[None, :] + b[None, :]
    else:
        u = x
    nrow, drow = _coef_rows(cols, GS, M_ORD, N_ORD, SHARED)
    p, q = _rational_pq(u, NUM, DEN, nrow[None, :], drow[None, :], cmask[None, :], M_ORD, N_ORD)
    tl.store(Y + offs, (p / q).to(Y.dtype.element_ty), mask=mask)
    if STATS and HAS_LN:
        tl.store(MEAN + rows, mean, mask=rmask)
        tl.store(RSTD + rows, rstd, mask=rmask)


@triton.jit
def _ln_rational_bwd_kernel(
    X, LW, LB, NUM, DEN, MEAN, RSTD, GY, DX, DW_PART, DB_PART, COEF_PART, M, C, GS, n_tiles,
    M_ORD: tl.constexpr, N_ORD: tl.constexpr, SHARED: tl.constexpr, IS64: tl.constexpr, HAS_LN: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_C: tl.constexpr, KP: tl.constexpr,
):
    pid = tl.program_id(0)
    nprog = tl.num_programs(0)
    cols = tl.arange(0, BLOCK_C)
    cmask = cols < C
    w = _to_math(tl.load(LW + cols, mask=cmask, other=0.0), IS64)
    b = _to_math(tl.load(LB + cols, mask=cmask, other=0.0), IS64)
    nrow, drow = _coef_rows(cols, GS, M_ORD, N_ORD, SHARED)
    nrow = nrow[None, :]
    drow = drow[None, :]
    cm2 = cmask[None, :]
    kidx = tl.arange(0, KP)[:, None]
    acc_w = _zeros_like(w)
    acc_b = _zeros_like(w)
    acc_k = tl.full((KP, BLOCK_C), 0.0, w.dtype)
    for t in range(pid, n_tiles, nprog):
        rows = t * BLOCK_M + tl.arange(0, BLOCK_M)
        rmask = rows < M
        mask = rmask[:, None] & cmask[None, :]
        offs = rows.to(tl.int64)[:, None] * C + cols[None, :]
        x = _to_math(tl.load(X + offs, mask=mask, other=0.0), IS64)
        gy = _to_math(tl.load(GY + offs, mask=mask, other=0.0), IS64)
        if HAS_LN:
            mean = tl.load(MEAN + rows, mask=rmask, other=0.0)
            rstd = tl.load(RSTD + rows, mask=rmask, other=0.0)
            xhat = tl.where(mask, (x - mean[:, None]) * rstd[:, None], 0.0)
            u = xhat * w[None, :] + b[None, :]
        else:
            u = x
        p, q = _rational_pq(u, NUM, DEN, nrow, drow, cm2, M_ORD, N_ORD)
        f = p / q
        r = gy / q
        du = r * _rational_dx(u, f, NUM, DEN, nrow, drow, cm2, M_ORD, N_ORD)
        # coefficient gradients: dF/da_i = u^i / Q, dF/d|b_j| = -F |u|^j / Q (sign(b_j) applied on the host)
        pw = r
        for i in tl.static_range(M_ORD + 1):
            acc_k += tl.where(kidx == i, _sum(pw, 0)[None, :], 0.0)
            pw = pw * u
        au = tl.abs(u)
        pb = -r * f
        for j in tl.static_range(N_ORD):
            pb = pb * au
            acc_k += tl.where(kidx == M_ORD + 1 + j, _sum(pb, 0)[None, :], 0.0)
        if HAS_LN:  # LayerNorm backward
            acc_w += _sum(du * xhat, 0)
            acc_b += _sum(du, 0)
            dxhat = du * w[None, :]
            c1 = _sum(dxhat * xhat, 1) / C
            c2 = _sum(dxhat, 1) / C
            dx = (dxhat - xhat * c1[:, None] - c2[:, None]) * rstd[:, None]
        else:
            dx = du
        tl.store(DX + offs, dx.to(DX.dtype.element_ty), mask=mask)
    tl.store(DW_PART + pid * C + cols, acc_w, mask=cmask)
    tl.store(DB_PART + pid * C + cols, acc_b, mask=cmask)
    kk = tl.arange(0, KP)[:, None]
    tl.store(COEF_PART + (pid * KP + kk) * C + cols[None, :], acc_k, mask=(kk < KP) & cm2)


def _ln_block(c: int, dtype: torch.dtype) -> tuple[int, int, int]:
    """(BLOCK_M, BLOCK_C, num_warps) for rows of c channels: ~4K elements per tile."""
    block_c = triton.next_power_of_2(c)
    if interpreting():
        return max(1, min(16, 4096 // block_c)), block_c, 1
    elems = 2048 if dtype == torch.float64 else 4096
    return max(1, min(64, elems // block_c)), block_c, 4 if block_c <= 1024 else 8


def _check_coeffs(numerator: torch.Tensor, denominator: torch.Tensor, channels: int) -> tuple[int, int, int, bool]:
    groups, n = denominator.shape
    m = numerator.shape[1] - 1
    if channels % groups:
        raise ValueError(f"triton_kan: G={groups} groups (denominator rows) must divide the {channels} channels")
    return groups, m, n, numerator.shape[0] == 1


def ln_rational_fwd(
    x: torch.Tensor, weight: torch.Tensor | None, bias: torch.Tensor | None, eps: float, numerator: torch.Tensor,
    denominator: torch.Tensor, *, out_dtype: torch.dtype | None = None, stats: bool = True,
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """``F(LayerNorm(x))`` over the last dim of a contiguous (M, C) x; returns (y, mean, rstd) (stats optional).

    ``weight=None`` (then ``bias`` is ignored): no LayerNorm, ``y = F(x)``. ``y`` is written in ``out_dtype``
    (default x's dtype); mean and rstd are kept in math precision.
    """
    m_rows, c = x.shape
    groups, m, n, shared = _check_coeffs(numerator, denominator, c)
    math = _math_dtype(x.dtype)
    y = torch.empty((m_rows, c), dtype=out_dtype or x.dtype, device=x.device)
    has_ln = weight is not None
    stats = stats and has_ln
    mean = torch.empty(m_rows if stats else 0, dtype=math, device=x.device)
    rstd = torch.empty_like(mean)
    block_m, block_c, warps = _ln_block(c, x.dtype)
    if m_rows:
        _ln_rational_fwd_kernel[(triton.cdiv(m_rows, block_m),)](
            x, weight if has_ln else x, bias if has_ln else x, numerator, denominator, y, mean, rstd, m_rows, c,
            c // groups, eps, M_ORD=m, N_ORD=n, SHARED=shared, IS64=math == torch.float64, STATS=stats,
            HAS_LN=has_ln, BLOCK_M=block_m, BLOCK_C=block_c, num_warps=warps,
        )
    return y, (mean if stats else None), (rstd if stats else None)


def _ln_programs(tiles: int) -> int:
    # fixed per shape (never per device), so the partial sums are added in the same order everywhere
    return min(tiles, 4 if interpreting() else 512)


def ln_rational_bwd(
    grad: torch.Tensor, x: torch.Tensor, weight: torch.Tensor | None, bias: torch.Tensor | None,
    mean: torch.Tensor | None, rstd: torch.Tensor | None, numerator: torch.Tensor, denominator: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None, torch.Tensor, torch.Tensor]:
    """Backward of :func:`ln_rational_fwd`: (dx, dweight, dbias, dnumerator, ddenominator), recomputing LN and F.

    Without LayerNorm (``weight=None``) dweight and dbias are None.
    """
    m_rows, c = x.shape
    groups, m, n, shared = _check_coeffs(numerator, denominator, c)
    math = _math_dtype(x.dtype)
    k = m + 1 + n
    kp = triton.next_power_of_2(k)
    block_m, block_c, warps = _ln_block(c, x.dtype)
    tiles = triton.cdiv(m_rows, block_m)
    progs = max(1, _ln_programs(tiles))
    dx = torch.empty_like(x)
    dw = torch.zeros((progs, c), dtype=math, device=x.device)
    db = torch.zeros_like(dw)
    coef = torch.zeros((progs, kp, c), dtype=math, device=x.device)
    has_ln = weight is not None
    if m_rows:
        _ln_rational_bwd_kernel[(progs,)](
            x, weight if has_ln else x, bias if has_ln else x, numerator, denominator, mean if has_ln else x,
            rstd if has_ln else x, grad, dx, dw, db, coef, m_rows, c, c // groups, tiles, M_ORD=m, N_ORD=n,
            SHARED=shared, IS64=math == torch.float64, HAS_LN=has_ln, BLOCK_M=block_m, BLOCK_C=block_c, KP=kp,
            num_warps=warps,
        )
    dnum, dden = _finish_coef(coef.sum(0)[:k].view(k, groups, c // groups).sum(-1).t(), numerator, denominator)
    if not has_ln:
        return dx, None, None, dnum, dden
    return dx, dw.sum(0).to(weight.dtype), db.sum(0).to(bias.dtype), dnum, dden


def _finish_coef(per_group: torch.Tensor, numerator: torch.Tensor, denominator: torch.Tensor):
    """(G, m+1+n) sums of dF/da_i and dF/d|b_j| -> (dnumerator, ddenominator) in the coefficients' dtypes."""
    m1 = numerator.shape[1]
    dnum = per_group[:, :m1]
    if numerator.shape[0] == 1:
        dnum = dnum.sum(0, keepdim=True)
    sign = torch.where(denominator < 0, -1.0, 1.0).to(per_group.dtype)
    dden = per_group[:, m1:] * sign
    return dnum.to(numerator.dtype), dden.to(denominator.dtype)


# ----------------------------------------------------------------------------------------------------------------
# GEMM with a rational prologue / epilogue

_EPI_NONE, _EPI_ACT, _EPI_DACT = 0, 1, 2


@triton.jit
def _matmul_rational_kernel(
    A, B, OUT, BIAS, NUM, DEN, Z, ZOUT, PART, M, N, K, GS, K_SPLIT, s_split,
    s_am, s_ak, s_bk, s_bn, s_om, s_on, s_zm, s_zn,
    HAS_BIAS: tl.constexpr, PROLOGUE: tl.constexpr, EPILOGUE: tl.constexpr, WRITE_Z: tl.constexpr,
    TILE_IN_GROUP: tl.constexpr, M_ORD: tl.constexpr, N_ORD: tl.constexpr, SHARED: tl.constexpr,
    IS64: tl.constexpr, PREC: tl.constexpr, KP: tl.constexpr, UPCAST_DOT: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr,
):
    pid = tl.program_id(0)
    num_pid_m = (M + BLOCK_M - 1) // BLOCK_M
    num_pid_n = (N + BLOCK_N - 1) // BLOCK_N
    per_group = GROUP_M * num_pid_n
    first_m = (pid // per_group) * GROUP_M
    size_m = min(num_pid_m - first_m, GROUP_M)
    pid_m = first_m + (pid % per_group) % size_m
    pid_n = (pid % per_group) // size_m
    rm = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    rn = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    rk = tl.arange(0, BLOCK_K)
    mmask = rm < M
    nmask = rn < N
    nrow, drow = _coef_rows(rn, GS, M_ORD, N_ORD, SHARED)
    nrow = nrow[None, :]
    drow = drow[None, :]
    nm2 = nmask[None, :]
    if IS64:
        acc = tl.full((BLOCK_M, BLOCK_N), 0.0, tl.float64)
    else:
        acc = tl.full((BLOCK_M, BLOCK_N), 0.0, tl.float32)
    # split-K (program_id(1)): this program adds K range [k_lo, k_hi) into its own output slab
    k_lo = tl.program_id(1) * K_SPLIT
    k_hi = min(k_lo + K_SPLIT, K)
    a_ptr = A + rm.to(tl.int64)[:, None] * s_am + (k_lo + rk).to(tl.int64)[None, :] * s_ak
    b_ptr = B + (k_lo + rk).to(tl.int64)[:, None] * s_bk + rn[None, :] * s_bn
    OUT += tl.program_id(1).to(tl.int64) * s_split
    for k0 in range(k_lo, k_hi, BLOCK_K):
        kmask = (k0 + rk) < k_hi
        a = tl.load(a_ptr, mask=mmask[:, None] & kmask[None, :], other=0.0)
        bmask = kmask[:, None] & nm2
        b = tl.load(b_ptr, mask=bmask, other=0.0)
        if PROLOGUE:  # B holds z: use F(z) (recomputed here instead of being kept from the forward)
            zb = _to_math(b, IS64)
            p, q = _rational_pq(zb, NUM, DEN, nrow, drow, nm2, M_ORD, N_ORD)
            b = tl.where(bmask, p / q, 0.0).to(a.dtype)
        if IS64:
            acc = tl.dot(a, b, acc, out_dtype=tl.float64)
        elif UPCAST_DOT:  # the interpreter multiplies bfloat16 bit patterns as integers: exact fp32 products instead
            acc = tl.dot(a.to(tl.float32), b.to(tl.float32), acc, input_precision="ieee")
        else:
            acc = tl.dot(a, b, acc, input_precision=PREC)
        a_ptr += BLOCK_K * s_ak
        b_ptr += BLOCK_K * s_bk
    if HAS_BIAS:
        acc += _to_math(tl.load(BIAS + rn, mask=nmask, other=0.0), IS64)[None, :]
    omask = mmask[:, None] & nm2
    o_off = rm.to(tl.int64)[:, None] * s_om + rn[None, :] * s_on
    if EPILOGUE == 1:
        # fc1 + act2: z rounded to the output dtype first, so F sees the z that the backward will read back
        z = _to_math(acc.to(OUT.dtype.element_ty), IS64)
        if WRITE_Z:
            tl.store(ZOUT + rm.to(tl.int64)[:, None] * s_zm + rn[None, :] * s_zn, z.to(ZOUT.dtype.element_ty),
                     mask=omask)
        p, q = _rational_pq(z, NUM, DEN, nrow, drow, nm2, M_ORD, N_ORD)
        tl.store(OUT + o_off, (p / q).to(OUT.dtype.element_ty), mask=omask)
    elif EPILOGUE == 2:
        # act2 backward: acc = dL/dF(z); dz = acc * F'(z), coefficient partials of this tile
        z = _to_math(tl.load(Z + rm.to(tl.int64)[:, None] * s_zm + rn[None, :] * s_zn, mask=omask, other=0.0),
                     IS64)
        p, q = _rational_pq(z, NUM, DEN, nrow, drow, nm2, M_ORD, N_ORD)
        f = p / q
        r = tl.where(omask, acc / q, 0.0)
        dz = r * _rational_dx(z, f, NUM, DEN, nrow, drow, nm2, M_ORD, N_ORD)
        tl.store(OUT + o_off, dz.to(OUT.dtype.element_ty), mask=omask)
        kk = tl.arange(0, KP)
        if TILE_IN_GROUP:
            part = tl.full((KP,), 0.0, acc.dtype)
        else:
            part = tl.full((KP, BLOCK_N), 0.0, acc.dtype)
        pw = r
        az = tl.abs(z)
        for i in tl.static_range(M_ORD + 1):
            if TILE_IN_GROUP:
                part += tl.where(kk == i, _sum(_sum(pw, 1), 0), 0.0)
            else:
                part += tl.where(kk[:, None] == i, _sum(pw, 0)[None, :], 0.0)
            pw = pw * z
        pb = -r * f
        for j in tl.static_range(N_ORD):
            pb = pb * az
            if TILE_IN_GROUP:
                part += tl.where(kk == M_ORD + 1 + j, _sum(_sum(pb, 1), 0), 0.0)
            else:
                part += tl.where(kk[:, None] == M_ORD + 1 + j, _sum(pb, 0)[None, :], 0.0)
        if TILE_IN_GROUP:
            tl.store(PART + (pid_m * num_pid_n + pid_n) * KP + kk, part)
        else:
            tl.store(PART + (pid_m * KP + kk[:, None]) * N + rn[None, :], part, mask=(kk[:, None] < KP) & nm2)
    else:
        tl.store(OUT + o_off, acc.to(OUT.dtype.element_ty), mask=omask)


def pick_tile_n(n: int, group_size: int | None) -> int:
    """Output-tile width: the widest of 128/64/32/16 that divides a rational's group (one group per tile)."""
    top = 32 if interpreting() else 128
    if group_size is not None:
        for bn in (128, 64, 32, 16):
            if bn <= top and group_size % bn == 0:
                return bn
    return min(top, max(16, triton.next_power_of_2(n)))


def _mm_config(m: int, n: int, k: int, dtype: torch.dtype, group_size: int | None) -> dict:
    bn = pick_tile_n(n, group_size)
    if interpreting():
        return dict(BLOCK_M=16, BLOCK_N=bn, BLOCK_K=16, GROUP_M=4, num_warps=1, num_stages=1)
    if dtype == torch.float64:
        return dict(BLOCK_M=32, BLOCK_N=min(bn, 32), BLOCK_K=16, GROUP_M=8, num_warps=4, num_stages=2)
    bk = 64 if dtype in (torch.float16, torch.bfloat16) else 32
    bm = 128 if m >= 4096 else 64
    return dict(BLOCK_M=bm, BLOCK_N=bn, BLOCK_K=bk, GROUP_M=8, num_warps=8 if bm * bn >= 128 * 128 else 4,
                num_stages=3 if dtype == torch.float32 else 4)


def _precision(dtype: torch.dtype) -> str:
    if dtype == torch.float32 and not interpreting() and torch.backends.cuda.matmul.allow_tf32:
        return "tf32"
    return "ieee"


def matmul_rational(
    a: torch.Tensor, b: torch.Tensor, *, bias: torch.Tensor | None = None, numerator: torch.Tensor | None = None,
    denominator: torch.Tensor | None = None, prologue: bool = False, epilogue: str = "none",
    z: torch.Tensor | None = None, write_z: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None, tuple[torch.Tensor, torch.Tensor] | None]:
    """``a (M, K) @ b (K, N)`` (any strides) with the rational (coefficients over the N columns) fused in.

    ``prologue=True``: b holds z and the product uses ``F(z)``. ``epilogue``: ``'none'``; ``'act'``: returns
    ``F(a @ b + bias)`` and, with ``write_z``, also ``z = a @ b + bias``; ``'dact'``: ``a @ b`` is dL/dF(z) for the
    given ``z`` (M, N), returns dz and the coefficient gradients (dnumerator, ddenominator).

    Returns (out, z or None, coefficient gradients or None). The output has a's dtype.
    """
    m, k = a.shape
    k2, n = b.shape
    if k != k2:
        raise ValueError(f"matmul_rational: a is {tuple(a.shape)} but b is {tuple(b.shape)}")
    rational = prologue or epilogue != "none"
    if rational:
        groups, m_ord, n_ord, shared = _check_coeffs(numerator, denominator, n)
        gs = n // groups
    else:
        groups, m_ord, n_ord, shared, gs = 1, 0, 0, True, n
        numerator = denominator = a  # unused pointers
    epi = {"none": _EPI_NONE, "act": _EPI_ACT, "dact": _EPI_DACT}[epilogue]
    # dact reduces coefficient partials per tile: tiles inside one rational group keep that workspace small
    cfg = _mm_config(m, n, k, a.dtype, gs if epi == _EPI_DACT else None)
    bm, bn, bk = cfg["BLOCK_M"], cfg["BLOCK_N"], cfg["BLOCK_K"]
    in_group = epi == _EPI_DACT and gs % bn == 0
    kp = triton.next_power_of_2(m_ord + 1 + n_ord)
    pm, pn = triton.cdiv(m, bm), triton.cdiv(n, bn)
    # Split-K for a long K over few output tiles (the weight gradients: K = tokens): enough programs for a GPU
    # (~2 per SM of a large one); the slabs are added by torch.sum in slab order. Depends on the shape only.
    splits = 1
    if epi == _EPI_NONE and bias is None and not interpreting():
        splits = max(1, min(triton.cdiv(264, pm * pn), k // (8 * bk)))
    elif epi == _EPI_NONE and bias is None:
        splits = max(1, min(2, k // (2 * bk)))  # exercised by the interpreter tests
    k_split = max(bk, triton.cdiv(triton.cdiv(k, splits), bk) * bk)
    splits = max(1, triton.cdiv(k, k_split))
    if splits > 1:
        slabs = torch.empty((splits, m, n), dtype=_math_dtype(a.dtype), device=a.device)
        out = slabs[0]
    else:
        slabs = None
        out = torch.empty((m, n), dtype=a.dtype, device=a.device)
    zout = torch.empty((m, n), dtype=a.dtype, device=a.device) if write_z else out
    part = None
    if epi == _EPI_DACT:
        shape = (pm, pn, kp) if in_group else (pm, kp, n)
        part = torch.zeros(shape, dtype=_math_dtype(a.dtype), device=a.device)
    zin = z if z is not None else out
    if m and n:
        _matmul_rational_kernel[(pm * pn, splits)](
            a, b, out, bias if bias is not None else out, numerator, denominator, zin, zout,
            part if part is not None else out, m, n, k, gs, k_split, m * n,
            a.stride(0), a.stride(1), b.stride(0), b.stride(1), out.stride(0), out.stride(1),
            zin.stride(0), zin.stride(1),
            HAS_BIAS=bias is not None, PROLOGUE=prologue, EPILOGUE=epi, WRITE_Z=write_z, TILE_IN_GROUP=in_group,
            M_ORD=m_ord, N_ORD=n_ord, SHARED=shared, IS64=a.dtype == torch.float64, PREC=_precision(a.dtype), KP=kp,
            UPCAST_DOT=interpreting() and a.dtype in (torch.float16, torch.bfloat16), **cfg,
        )
    if slabs is not None:
        out = slabs.sum(0).to(a.dtype)
    coef = None
    if part is not None:
        k_all = m_ord + 1 + n_ord
        if in_group:  # (pm, pn, KP): tile column block t belongs to group t // (gs / bn)
            per_group = part.sum(0)[:, :k_all].view(groups, gs // bn, k_all).sum(1)
        else:  # (pm, KP, N) per-column partials
            per_group = part.sum(0)[:k_all].view(k_all, groups, gs).sum(-1).t()
        coef = _finish_coef(per_group, numerator, denominator)
    return out, (zout if write_z else None), coef
