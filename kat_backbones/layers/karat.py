"""Fourier-KArAt: Kolmogorov-Arnold attention with a Fourier basis (Maity et al., 2025, arXiv 2503.10632).

Replaces the row-wise softmax of every head. With logits ``A = q k^T / sqrt(d)`` (N x N per head), each row
``A_k`` goes through a KAN operator ``Phi: R^N -> R^r`` with one learnable univariate function per (output p, key
position q)::

    Phi(A_k)_p = sum_q phi_pq(A_kq),    phi_pq(x) = sum_{m=1..G} a_pqm cos(m x) + b_pqm sin(m x)

and a learnable ``W`` (N x r) maps back: ``attn_k = W Phi(A_k)``. There is no normalisation after ``Phi``; the
same operator serves every query row of a head. ``blockwise``: one operator per head per block; ``universal``:
one per head shared by all blocks (the same :class:`FourierKArAt` module registered in every block).

Memory: a direct implementation materialises the features ``cos(m A), sin(m A)`` as a (B, h, N, N, 2G) tensor and
autograd keeps it (and more) until backward. :func:`fourier_rows` instead computes ``Phi`` as
``sum_m cos(m A) @ a_m + sin(m A) @ b_m`` (one (N, N) @ (N, r) matmul per harmonic and head, harmonics by the
angle-addition recurrence), saves only ``A`` for backward and recomputes the harmonics there, so a block keeps two
N x N tensors per head (``A`` and the attention map) instead of 2G + a few. Large batches are processed in slices
(``chunk_elements``) so that the transient harmonics stay bounded as well.

Parameters per head per block: ``a`` and ``b`` of shape (r, N, G) each (stored together as ``coeff``, laid out
(h, 2, G, N, r) for the matmuls) plus ``W`` (N, r): ``r N (2G + 1)`` (see docs/karat.md for the comparison with the
paper's counts).

Initialisation (``init_std``): the paper draws every coefficient from N(0, 1), which at N = 197, G = 3, r = 12 gives
attention weights with std ~84 and blows activations up by orders of magnitude per block (tests/test_karat.py,
``tools/benchmark_karat.py --init-study``). The default ``init_std=None`` is variance-preserving instead:
``a, b ~ N(0, 1 / (N G))`` so that ``Phi`` has unit variance, and ``W ~ N(0, 1 / (N r))`` so that an attention row
has unit squared norm and ``attn @ v`` keeps the variance of ``v``. A float ``init_std`` draws all three from
N(0, init_std^2) (``init_std=1.0`` is the paper's).

This module holds the operator and the attention modules; :mod:`kat_backbones.models.karat` puts them into timm's
VisionTransformer and the dense backbone, and :mod:`kat_backbones.flops` counts the operator (kind ``'karat'``).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from typing import Any, Literal

import torch
from timm.layers import Attention, apply_rot_embed_cat
from timm.models.vision_transformer_sam import Attention as SamAttention
from timm.models.vision_transformer_sam import get_decomposed_rel_pos_bias
from torch import nn
from torch.autograd.function import once_differentiable

__all__ = [
    "KArAtMode",
    "DEFAULT_KARAT_CFG",
    "FourierKArAt",
    "KArAtAttention",
    "KArAtWindowAttention",
    "fourier_rows",
    "fourier_rows_reference",
    "karat_num_params",
    "make_karat_operator",
    "resolve_karat_cfg",
]

KArAtMode = Literal["blockwise", "universal"]

DEFAULT_KARAT_CFG: dict[str, Any] = dict(grid=3, rank=12, mode="blockwise", init_std=None)
"""Defaults of ``attn_cfg``: grid G = 3 (the paper's best for ViT-T/S; 1 for ViT-B), rank r = 12, blockwise,
variance-preserving init."""

_DEFAULT_CHUNK_ELEMENTS = 1 << 25  # transient N x N tensors of one slice: 32 Mi elements (128 MB in fp32)


def karat_num_params(num_heads: int, num_tokens: int, grid: int, rank: int) -> int:
    """Parameters of one :class:`FourierKArAt` operator (all heads of a block): ``h r N (2G + 1)``."""
    return num_heads * rank * num_tokens * (2 * grid + 1)


def resolve_karat_cfg(attn_cfg: Mapping[str, Any] | None, extra_keys: tuple[str, ...] = ()) -> dict[str, Any]:
    """Merges ``attn_cfg`` over :data:`DEFAULT_KARAT_CFG` and validates it.

    Args:
        attn_cfg: ``grid``, ``rank``, ``mode`` (``'blockwise'`` / ``'universal'``), ``init_std`` (None or a float),
            plus any of ``extra_keys``.
        extra_keys: further keys the caller accepts (e.g. ``'global_attn'`` for the dense backbone).

    Returns:
        The merged config.

    Raises:
        ValueError: unknown keys or invalid values.
    """
    cfg = {**DEFAULT_KARAT_CFG, **(attn_cfg or {})}
    unknown = set(cfg) - set(DEFAULT_KARAT_CFG) - set(extra_keys)
    if unknown:
        raise ValueError(f"attn_cfg: unknown keys {sorted(unknown)}; expected {sorted(DEFAULT_KARAT_CFG)} "
                         f"(+ {list(extra_keys)})")
    if int(cfg["grid"]) < 1 or int(cfg["rank"]) < 1:
        raise ValueError(f"attn_cfg: grid and rank must be >= 1, got grid={cfg['grid']}, rank={cfg['rank']}")
    if cfg["mode"] not in ("blockwise", "universal"):
        raise ValueError(f"attn_cfg: mode must be 'blockwise' or 'universal', got {cfg['mode']!r}")
    if cfg["init_std"] is not None and not float(cfg["init_std"]) > 0:
        raise ValueError(f"attn_cfg: init_std must be None (variance-preserving) or > 0, got {cfg['init_std']}")
    cfg["grid"], cfg["rank"] = int(cfg["grid"]), int(cfg["rank"])
    return cfg


# ---------------------------------------------------------------------------------------------------------------
# the row operator Phi


def _harmonics(x: torch.Tensor, grid: int) -> Iterator[tuple[int, torch.Tensor, torch.Tensor]]:
    """Yields ``(m, cos(m x), sin(m x))`` for m = 1..grid (angle-addition recurrence: two trig calls in all)."""
    c1, s1 = torch.cos(x), torch.sin(x)
    c, s = c1, s1
    for m in range(1, grid + 1):
        yield m, c, s
        if m < grid:
            c, s = c * c1 - s * s1, s * c1 + c * s1


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


def _slices(batch: int, per_item: int, chunk_elements: int) -> Iterator[slice]:
    step = max(1, chunk_elements // max(per_item, 1))
    for start in range(0, batch, step):
        yield slice(start, min(start + step, batch))


class _FourierRows(torch.autograd.Function):
    """``Phi`` of every row; saves only the logits and recomputes the harmonics in backward."""

    @staticmethod
    def forward(ctx, logits: torch.Tensor, coeff: torch.Tensor, chunk_elements: int) -> torch.Tensor:
        batch, heads, n_q, n_k = logits.shape
        _, _, grid, _, rank = coeff.shape
        ctype = _compute_dtype(logits.dtype)
        ctx.save_for_backward(logits, coeff)
        ctx.chunk_elements = chunk_elements
        out = logits.new_empty(batch, heads, n_q, rank)
        with torch.autocast(logits.device.type, enabled=False):
            w = coeff.to(ctype)
            for sl in _slices(batch, heads * n_q * n_k, chunk_elements):
                acc = None
                for m, c, s in _harmonics(logits[sl].to(ctype), grid):
                    term = torch.matmul(c, w[:, 0, m - 1]).add_(torch.matmul(s, w[:, 1, m - 1]))
                    acc = term if acc is None else acc.add_(term)
                out[sl] = acc.to(out.dtype)
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None, None]:
        logits, coeff = ctx.saved_tensors
        need_x, need_w = ctx.needs_input_grad[:2]
        batch, heads, n_q, n_k = logits.shape
        grid = coeff.shape[2]
        ctype = _compute_dtype(logits.dtype)
        grad_x = torch.empty_like(logits) if need_x else None
        with torch.autocast(logits.device.type, enabled=False):
            w = coeff.to(ctype)
            grad_w = torch.zeros_like(w) if need_w else None
            w_t = w.transpose(-1, -2) if need_x else None  # (h, 2, G, r, N)
            for sl in _slices(batch, heads * n_q * n_k, ctx.chunk_elements):
                g = grad_out[sl].to(ctype)  # (b, h, Nq, r)
                gx = torch.zeros(g.shape[:-1] + (n_k,), dtype=ctype, device=g.device) if need_x else None
                for m, c, s in _harmonics(logits[sl].to(ctype), grid):
                    if need_w:  # dPhi_kp / da_qpm = cos(m x_kq): sum over rows k and the batch
                        grad_w[:, 0, m - 1] += torch.matmul(c.transpose(-1, -2), g).sum(0)
                        grad_w[:, 1, m - 1] += torch.matmul(s.transpose(-1, -2), g).sum(0)
                    if need_x:  # d/dx: -m sin(m x) a + m cos(m x) b
                        gx.addcmul_(s, torch.matmul(g, w_t[:, 0, m - 1]), value=-m)
                        gx.addcmul_(c, torch.matmul(g, w_t[:, 1, m - 1]), value=m)
                if need_x:
                    grad_x[sl] = gx.to(grad_x.dtype)
        return grad_x, (grad_w.to(coeff.dtype) if need_w else None), None


def fourier_rows(
    logits: torch.Tensor, coeff: torch.Tensor, chunk_elements: int = _DEFAULT_CHUNK_ELEMENTS
) -> torch.Tensor:
    """``Phi`` of every row of every head, memory-lean (saves only ``logits``; harmonics recomputed in backward).

    Args:
        logits: (B, h, N, N) attention logits. float16/bfloat16 are computed in float32 (autocast off inside).
        coeff: (h, 2, G, N, r) Fourier coefficients: ``coeff[:, 0]`` the cosine ones ``a``, ``coeff[:, 1]`` the
            sine ones ``b``, indexed [head, (cos|sin), harmonic m - 1, key position q, output p].
        chunk_elements: batch slices are sized so that one transient (slice, h, N, N) tensor has at most this many
            elements. Defaults to 2**25.

    Returns:
        (B, h, N, r) in ``logits``' dtype.
    """
    return _FourierRows.apply(logits, coeff, int(chunk_elements))


def fourier_rows_reference(logits: torch.Tensor, coeff: torch.Tensor) -> torch.Tensor:
    """Direct ``Phi`` that materialises the (B, h, N, N, 2G) features (the naive implementation; tests, benchmark)."""
    grid = coeff.shape[2]
    m = torch.arange(1, grid + 1, dtype=logits.dtype, device=logits.device)
    mx = logits[..., None] * m  # (B, h, N, N, G)
    feats = torch.cat([torch.cos(mx), torch.sin(mx)], dim=-1)  # (B, h, N, N, 2G)
    weights = coeff.flatten(1, 2).to(logits.dtype)  # (h, 2G, N, r), cos harmonics first as in feats
    return torch.einsum("bhkqg,hgqp->bhkp", feats, weights)


class FourierKArAt(nn.Module):
    """The Fourier-KArAt operator of one attention layer (all heads): logits (B, h, N, N) -> attention (B, h, N, N).

    ``attn[b, h, k] = W_h Phi_h(logits[b, h, k])`` (see the module docstring); no normalisation.

    Parameters: ``coeff`` (h, 2, G, N, r) — per head the cosine and sine coefficients a, b (r x N x G each) — and
    ``weight`` (h, N, r), per head W (N x r). In total :func:`karat_num_params` = ``h r N (2G + 1)``.

    Args:
        num_heads: heads h.
        num_tokens: tokens N (keys and queries) the operator is built for; fixed.
        grid: harmonics G. Defaults to 3.
        rank: rank r of ``Phi``'s output. Defaults to 12.
        init_std: None (variance-preserving: a, b ~ N(0, 1/(NG)), W ~ N(0, 1/(Nr))) or the std of every
            coefficient (1.0 = the paper's N(0, 1)). Defaults to None.
        memory_efficient: :func:`fourier_rows` (True) or the materialising :func:`fourier_rows_reference`.
            Defaults to True.
        chunk_elements: see :func:`fourier_rows`. Defaults to 2**25.
        device: parameter device. Defaults to None.
        dtype: parameter dtype. Defaults to None.
    """

    def __init__(
        self,
        num_heads: int,
        num_tokens: int,
        grid: int = DEFAULT_KARAT_CFG["grid"],
        rank: int = DEFAULT_KARAT_CFG["rank"],
        init_std: float | None = DEFAULT_KARAT_CFG["init_std"],
        memory_efficient: bool = True,
        chunk_elements: int = _DEFAULT_CHUNK_ELEMENTS,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        if min(num_heads, num_tokens, grid, rank) < 1:
            raise ValueError(f"FourierKArAt: num_heads, num_tokens, grid and rank must be >= 1, got "
                             f"{(num_heads, num_tokens, grid, rank)}")
        self.num_heads, self.num_tokens, self.grid, self.rank = num_heads, num_tokens, grid, rank
        self.init_std = init_std
        self.memory_efficient = memory_efficient
        self.chunk_elements = chunk_elements
        dd = {"device": device, "dtype": dtype}
        self.coeff = nn.Parameter(torch.empty(num_heads, 2, grid, num_tokens, rank, **dd))
        self.weight = nn.Parameter(torch.empty(num_heads, num_tokens, rank, **dd))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Draws the coefficients (see ``init_std``)."""
        if self.coeff.is_meta:
            return
        if self.init_std is None:
            coeff_std = 1.0 / math.sqrt(self.num_tokens * self.grid)
            weight_std = 1.0 / math.sqrt(self.num_tokens * self.rank)
        else:
            coeff_std = weight_std = float(self.init_std)
        with torch.no_grad():
            nn.init.normal_(self.coeff, std=coeff_std)
            nn.init.normal_(self.weight, std=weight_std)

    def forward(self, logits: torch.Tensor) -> torch.Tensor:
        """(B, h, N, N) logits -> (B, h, N, N) attention weights."""
        if logits.ndim != 4 or logits.shape[1] != self.num_heads or logits.shape[-2:] != (self.num_tokens,) * 2:
            raise ValueError(
                f"FourierKArAt was built for {self.num_heads} heads and N={self.num_tokens} tokens (logits "
                f"(B, {self.num_heads}, {self.num_tokens}, {self.num_tokens})) and got logits of shape "
                f"{tuple(logits.shape)}: its coefficients are indexed by token position, so the token count is fixed "
                f"(same image size / window size as at build time)"
            )
        if self.memory_efficient:
            phi = fourier_rows(logits, self.coeff, self.chunk_elements)
        else:
            phi = fourier_rows_reference(logits, self.coeff)
        return torch.matmul(phi, self.weight.to(phi.dtype).transpose(-1, -2))

    def extra_repr(self) -> str:
        return (f"num_heads={self.num_heads}, num_tokens={self.num_tokens}, grid={self.grid}, rank={self.rank}, "
                f"init_std={self.init_std}, memory_efficient={self.memory_efficient}")


def make_karat_operator(num_heads: int, num_tokens: int, cfg: Mapping[str, Any], **dd) -> FourierKArAt:
    """A :class:`FourierKArAt` for ``num_heads`` heads and ``num_tokens`` tokens from a resolved ``attn_cfg``
    (:func:`resolve_karat_cfg`); ``dd``: ``device`` / ``dtype``."""
    return FourierKArAt(num_heads, num_tokens, grid=cfg["grid"], rank=cfg["rank"], init_std=cfg["init_std"], **dd)


def _check_operator(operator: FourierKArAt, num_heads: int, num_tokens: int) -> None:
    if operator.num_heads != num_heads or operator.num_tokens != num_tokens:
        raise ValueError(f"shared FourierKArAt has (heads, tokens) = {(operator.num_heads, operator.num_tokens)}, "
                         f"the attention needs {(num_heads, num_tokens)}")


# ---------------------------------------------------------------------------------------------------------------
# attention layers


class KArAtAttention(Attention):
    """timm's :class:`~timm.layers.Attention` (ViT, tokens (B, N, C)) with Fourier-KArAt in place of the softmax.

    Same parameters and names as timm's (``qkv``, ``proj``, ...), plus ``karat`` (:class:`FourierKArAt`). timm's
    ViT constructs ``attn_layer`` itself with fixed arguments (no token count), so a ViT gets this attention from
    :class:`kat_backbones.models.karat.KArAtVisionTransformer`, which replaces each block's attention after building.

    Args:
        dim: embedding width.
        num_heads: heads. Defaults to 8.
        num_tokens: tokens N (cls token included). Required unless ``operator`` is given.
        karat_cfg: ``grid``, ``rank``, ``init_std`` (see :func:`resolve_karat_cfg`). Defaults to the defaults.
        operator: a :class:`FourierKArAt` to use (shared, ``universal`` mode) instead of a new one.
        **kwargs: the rest of timm's ``Attention`` arguments (``qkv_bias``, ``attn_drop``, ...).
    """

    def __init__(
        self,
        dim: int,
        num_heads: int = 8,
        num_tokens: int | None = None,
        karat_cfg: Mapping[str, Any] | None = None,
        operator: FourierKArAt | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(dim, num_heads, **kwargs)
        self.fused_attn = False
        if operator is None:
            if num_tokens is None:
                raise ValueError("KArAtAttention needs num_tokens (the fixed token count N) or a shared operator")
            dd = {"device": kwargs.get("device"), "dtype": kwargs.get("dtype")}
            operator = make_karat_operator(num_heads, int(num_tokens), resolve_karat_cfg(karat_cfg), **dd)
        _check_operator(operator, num_heads, operator.num_tokens if num_tokens is None else int(num_tokens))
        self.karat = operator

    def forward(
        self, x: torch.Tensor, attn_mask: torch.Tensor | None = None, is_causal: bool = False
    ) -> torch.Tensor:
        if attn_mask is not None or is_causal:
            raise ValueError("Fourier-KArAt attention has no attention mask / causal mode (its weights are not a "
                             "softmax, so an additive -inf mask has no meaning)")
        batch, tokens, _ = x.shape
        gate = self.gate(x).sigmoid() if getattr(self, "gate", None) is not None else None
        qkv = self.qkv(x).reshape(batch, tokens, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        q, k = self.q_norm(q), self.k_norm(k)
        attn = self.karat((q * self.scale) @ k.transpose(-2, -1))
        attn = self.attn_drop(attn)
        x = (attn @ v).transpose(1, 2).reshape(batch, tokens, self.attn_dim)
        x = self.norm(x)
        if gate is not None:
            x = x * gate
        x = self.proj(x)
        x = self.proj_drop(x)
        return x


class KArAtWindowAttention(SamAttention):
    """timm's ViTDet/SAM attention (tokens (B, H, W, C), decomposed relative positions) with Fourier-KArAt.

    The relative-position bias is added to the logits before ``Phi``. Parameters and names as timm's
    (``qkv``, ``proj``, ``rel_pos_h``, ``rel_pos_w``) plus ``karat``.

    Args:
        dim: embedding width.
        num_heads: heads. Defaults to 8.
        num_tokens: tokens per attention call (window_size ** 2 in a window block, H * W in a global one).
        karat_cfg: see :class:`KArAtAttention`.
        operator: a shared :class:`FourierKArAt` (``universal`` mode). Defaults to None (a new one).
        **kwargs: timm SAM ``Attention`` arguments (``qkv_bias``, ``use_rel_pos``, ``input_size``, ...).
    """

    def __init__(
        self,
        dim: int,
        num_heads: int = 8,
        num_tokens: int | None = None,
        karat_cfg: Mapping[str, Any] | None = None,
        operator: FourierKArAt | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(dim, num_heads, **kwargs)
        self.fused_attn = False
        if operator is None:
            if num_tokens is None:
                raise ValueError("KArAtWindowAttention needs num_tokens (the fixed token count N) or an operator")
            dd = {"device": kwargs.get("device"), "dtype": kwargs.get("dtype")}
            operator = make_karat_operator(num_heads, int(num_tokens), resolve_karat_cfg(karat_cfg), **dd)
        _check_operator(operator, num_heads, operator.num_tokens if num_tokens is None else int(num_tokens))
        self.karat = operator

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, height, width, _ = x.shape
        tokens = height * width
        x = x.reshape(batch, tokens, -1)
        qkv = self.qkv(x).view(batch, tokens, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.reshape(3, batch * self.num_heads, tokens, -1).unbind(0)  # (B * h, N, d) each
        q, k = self.q_norm(q), self.k_norm(k)
        bias = None
        if self.use_rel_pos:
            bias = get_decomposed_rel_pos_bias(q, self.rel_pos_h, self.rel_pos_w, (height, width), (height, width))
        elif self.rope is not None:
            rope = self.rope.get_embed()
            q = apply_rot_embed_cat(q, rope).type_as(v)
            k = apply_rot_embed_cat(k, rope).type_as(v)
        logits = (q * self.scale) @ k.transpose(-2, -1)
        if bias is not None:
            logits = logits + bias
        attn = self.karat(logits.view(batch, self.num_heads, tokens, tokens))
        attn = self.attn_drop(attn.view(batch * self.num_heads, tokens, tokens))
        x = (attn @ v).view(batch, self.num_heads, tokens, -1).transpose(1, 2).reshape(batch, tokens, -1)
        x = self.proj(x)
        x = self.proj_drop(x)
        return x.view(batch, height, width, -1)
