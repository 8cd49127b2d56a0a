"""Fused pieces of the GR-KAN layer (``KAN(kan_impl=...)``) as autograd functions.

- :func:`layer_norm_rational` -- ``F(LayerNorm(x))`` on the compiled group-rational op, as ONE autograd node that
  keeps only the LayerNorm input (and its per-token mean / rstd) for backward and recomputes ``LayerNorm(x)`` there.
  Unfused, autograd keeps both x (LayerNorm) and ``LayerNorm(x)`` (the rational): one (..., C) tensor more per
  block. Any device with the compiled op (CPU, CUDA). Gradients equal the unfused ones bitwise (same kernels).
- :func:`kan_triton` -- the whole layer ``fc2(F2(fc1(F1(LN(x)))))`` in Triton kernels (:mod:`.triton_kan`):
  LayerNorm + act1 in one pass, act2 in fc1's GEMM epilogue, fc2 on cuBLAS. Kept for backward: x, mean/rstd and
  ``z = fc1(...)``; act1's and act2's outputs are recomputed (act2's inside the GEMM that needs it). CUDA tensors,
  or CPU tensors under ``TRITON_INTERPRET=1`` (tests).

Shapes are not re-validated per call here: :class:`kat_backbones.layers.KAN` checks its configuration once per
(device, dtype) and caches the decision.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F

__all__ = ["layer_norm_rational", "kan_triton", "triton_usable"]


@functools.cache
def _triton_module():
    try:
        from . import triton_kan
    except ImportError:  # Triton not installed (or broken): the compiled-op paths remain
        return None
    return triton_kan


def triton_usable(device: torch.device) -> bool:
    """Whether :func:`kan_triton` can run on ``device``: CUDA with Triton, or CPU under ``TRITON_INTERPRET=1``."""
    tk = _triton_module()
    if tk is None:
        return False
    if device.type == "cuda":
        return True
    return device.type == "cpu" and tk.interpreting()


# ----------------------------------------------------------------------------------------------------------------
# LayerNorm + rational on the compiled op (CPU and CUDA)


class _LayerNormRational(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, eps, numerator, denominator):
        shape = (x.shape[-1],)
        u, mean, rstd = torch.native_layer_norm(x, shape, weight, bias, eps)
        y = torch.ops.kat_backbones.group_rational_fwd.default(u, numerator, denominator, -1)
        ctx.save_for_backward(x, weight, bias, mean, rstd, numerator, denominator)
        ctx.eps = eps
        return y

    @staticmethod
    def backward(ctx, grad):
        x, weight, bias, mean, rstd, numerator, denominator = ctx.saved_tensors
        need = ctx.needs_input_grad
        shape = (x.shape[-1],)
        # The same kernel as the forward: u is bitwise the tensor the unfused path would have kept.
        u = torch.native_layer_norm(x, shape, weight, bias, ctx.eps)[0]
        du, dnum, dden = torch.ops.kat_backbones.group_rational_bwd.default(
            grad.contiguous(), u, numerator, denominator, -1, [need[0] or need[1] or need[2], need[4], need[5]]
        )
        del u
        dx = dw = db = None
        if need[0] or need[1] or need[2]:
            dx, dw, db = torch.ops.aten.native_layer_norm_backward.default(
                du, x, shape, mean, rstd, weight, bias, [need[0], need[1], need[2]]
            )
        return dx, dw, db, None, (dnum if need[4] else None), (dden if need[5] else None)


def layer_norm_rational(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float, numerator: torch.Tensor,
    denominator: torch.Tensor,
) -> torch.Tensor:
    """``group_rational(layer_norm(x, (C,), weight, bias, eps), numerator, denominator)`` over the last dim.

    One autograd node that saves x (not the LayerNorm output) and recomputes the LayerNorm in backward. Computed in
    x's dtype with autocast off, exactly as autocast runs the unfused pair (LayerNorm is a float32 op under autocast,
    the rational keeps its input's dtype). Arguments are those of the two ops (checked by the caller).
    """
    with torch.autocast(x.device.type, enabled=False):
        return _LayerNormRational.apply(x, weight, bias, eps, numerator, denominator)


# ----------------------------------------------------------------------------------------------------------------
# the whole layer in Triton


class _KanTriton(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, ln_weight, ln_bias, eps, num1, den1, w1, b1, num2, den2, w2, b2):
        tk = _triton_module()
        h, mean, rstd = tk.ln_rational_fwd(x, ln_weight, ln_bias, eps, num1, den1, out_dtype=w1.dtype)
        train = any(ctx.needs_input_grad)
        a, z, _ = tk.matmul_rational(h, w1.t(), bias=b1, numerator=num2, denominator=den2, epilogue="act",
                                     write_z=train)
        del h
        out = F.linear(a, w2, b2)
        if train:
            ctx.save_for_backward(x, ln_weight, ln_bias, mean, rstd, num1, den1, w1, b1, z, num2, den2, w2)
            ctx.eps = eps
            ctx.has_b2 = b2 is not None
        return out

    @staticmethod
    def backward(ctx, grad):
        tk = _triton_module()
        x, ln_weight, ln_bias, mean, rstd, num1, den1, w1, b1, z, num2, den2, w2 = ctx.saved_tensors
        need = ctx.needs_input_grad
        g = grad.contiguous()
        # act2 <- fc2: dz = (g @ W2) * F2'(z) and act2's coefficient gradients, one GEMM
        dz, _, (dnum2, dden2) = tk.matmul_rational(g, w2, numerator=num2, denominator=den2, epilogue="dact", z=z)
        # fc2's weight: g^T @ F2(z), F2 recomputed on the loaded tiles of z
        dw2 = tk.matmul_rational(g.t(), z, numerator=num2, denominator=den2, prologue=True)[0] if need[10] else None
        db2 = g.sum(0) if ctx.has_b2 and need[11] else None
        del z
        # fc1: its input (act1's output) recomputed from x
        dw1 = None
        if need[6]:
            h = tk.ln_rational_fwd(x, ln_weight, ln_bias, ctx.eps, num1, den1, out_dtype=w1.dtype, stats=False)[0]
            dw1 = dz.t().mm(h)
            del h
        db1 = dz.sum(0) if b1 is not None and need[7] else None
        dh = dz.mm(w1)
        del dz
        dx, dlw, dlb, dnum1, dden1 = tk.ln_rational_bwd(dh, x, ln_weight, ln_bias, mean, rstd, num1, den1)
        return (dx, dlw, dlb, None, dnum1, dden1, dw1, db1, dnum2, dden2, dw2, db2)


def kan_triton(
    x: torch.Tensor, norm: tuple[torch.Tensor, torch.Tensor, float] | None, num1: torch.Tensor, den1: torch.Tensor,
    w1: torch.Tensor, b1: torch.Tensor | None, num2: torch.Tensor, den2: torch.Tensor, w2: torch.Tensor,
    b2: torch.Tensor | None,
) -> torch.Tensor:
    """``fc2(F2(fc1(F1(LN(x)))))`` over the last dim of x (..., C) in Triton kernels; ``norm=None``: no LayerNorm.

    ``norm`` is (weight, bias, eps) of the LayerNorm; fc weights are (out, in) like ``nn.Linear``. Under autocast the
    GEMMs run in the autocast dtype (and the layer returns it), LayerNorm and rationals in float32, like the unfused
    layer under autocast.
    """
    dev = x.device.type
    dtype = torch.get_autocast_dtype(dev) if torch.is_autocast_enabled(dev) else x.dtype
    lead = x.shape[:-1]
    x2 = x.reshape(-1, x.shape[-1]).contiguous()
    ln_w, ln_b, eps = norm if norm is not None else (None, None, 0.0)
    w1c, w2c = w1.to(dtype).contiguous(), w2.to(dtype).contiguous()
    b1c = b1.to(dtype) if b1 is not None else None
    b2c = b2.to(dtype) if b2 is not None else None
    with torch.autocast(dev, enabled=False):
        out = _KanTriton.apply(x2, ln_w, ln_b, eps, num1, den1, w1c, b1c, num2, den2, w2c, b2c)
    return out.view(*lead, out.shape[-1])
