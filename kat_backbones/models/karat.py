"""Fourier-KArAt in models: putting :mod:`kat_backbones.layers.karat`'s attention into timm's VisionTransformer
(:class:`KArAtVisionTransformer` / :func:`apply_karat_to_vit_blocks`, for ``create_kat(attn_type='fourier_karat')``)
and into the ViTDet blocks of the dense backbone (:func:`apply_karat_to_dense_blocks`, for
``KATDense(attn_type='fourier_karat')``).

timm's ViT blocks take the attention as a class (``attn_layer``) and construct it with fixed arguments, so a token
count cannot reach it there; the attention is replaced after the blocks are built instead, like in the dense
backbone."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from timm.layers import Attention
from timm.models.vision_transformer import VisionTransformer
from timm.models.vision_transformer_sam import Attention as SamAttention
from torch import nn

from kat_backbones.layers.karat import (
    KArAtAttention,
    KArAtWindowAttention,
    make_karat_operator,
    resolve_karat_cfg,
)

__all__ = ["AttnType", "KArAtVisionTransformer", "apply_karat_to_vit_blocks", "apply_karat_to_dense_blocks"]

AttnType = Literal["softmax", "fourier_karat"]
"""Attention of a model: timm's softmax attention or Fourier-KArAt."""

_TIMM_ATTENTION_MODULES = ("qkv", "q_norm", "k_norm", "norm", "proj")
"""Submodules of timm's ``Attention`` that a :class:`~kat_backbones.layers.KArAtAttention` takes over."""


class KArAtVisionTransformer(VisionTransformer):
    """timm's :class:`~timm.models.vision_transformer.VisionTransformer` with Fourier-KArAt attention in every block
    (what ``create_kat(attn_type='fourier_karat')`` builds).

    The network is timm's, built as usual; then each block's ``Attention`` becomes a
    :class:`~kat_backbones.layers.KArAtAttention` that takes over its ``qkv``, norms and ``proj`` (with timm's
    initialisation) and adds the operator ``karat``. This happens inside the constructor, so that timm's builder
    loads pretrained weights and wraps feature extractors around the finished model.

    N is fixed by the image size: ``(img_size / patch_size)^2 + num_prefix_tokens`` (197 at 224/16 with a cls token).
    In ``universal`` mode every block gets the same :class:`~kat_backbones.layers.FourierKArAt` instance.

    Args:
        *args: VisionTransformer arguments.
        attn_cfg (dict, optional): Fourier-KArAt settings (:func:`~kat_backbones.layers.karat.resolve_karat_cfg`).
            Defaults to None.
        **kwargs: VisionTransformer arguments.

    Raises:
        ValueError: ``dynamic_img_size=True`` (no fixed token count), or a bad ``attn_cfg``.
    """

    def __init__(self, *args: Any, attn_cfg: Mapping[str, Any] | None = None, **kwargs: Any) -> None:
        cfg = resolve_karat_cfg(attn_cfg)  # validated before the model is built
        if kwargs.get("dynamic_img_size", False):
            raise ValueError("attn_type='fourier_karat' needs a fixed token count (its coefficients are indexed by "
                             "token position): dynamic_img_size=True is not supported; set img_size instead")
        super().__init__(*args, **kwargs)
        apply_karat_to_vit_blocks(self.blocks, self.patch_embed.num_patches + self.num_prefix_tokens, cfg)


def apply_karat_to_vit_blocks(blocks: nn.Sequential, num_tokens: int, attn_cfg: Mapping[str, Any] | None) -> None:
    """Replaces the timm ``Attention`` of ViT blocks by :class:`~kat_backbones.layers.KArAtAttention`, in place,
    keeping their ``qkv``, ``q_norm``, ``k_norm``, ``norm`` and ``proj`` modules (and so their weights).

    Args:
        blocks: the blocks (each with an ``attn``).
        num_tokens: tokens N per image, prefix tokens included.
        attn_cfg: :func:`~kat_backbones.layers.karat.resolve_karat_cfg` keys.
    """
    cfg = resolve_karat_cfg(attn_cfg)
    shared = None
    for blk in blocks:
        old = blk.attn
        if not isinstance(old, Attention) or isinstance(old, KArAtAttention):
            raise TypeError(f"expected timm.layers.Attention, got {type(old).__name__}")
        dd = {"device": old.qkv.weight.device, "dtype": old.qkv.weight.dtype}
        if cfg["mode"] == "universal" and shared is None:
            shared = make_karat_operator(old.num_heads, num_tokens, cfg, **dd)
        new = KArAtAttention(old.qkv.in_features, num_heads=old.num_heads, num_tokens=num_tokens, karat_cfg=cfg,
                             operator=shared, attn_drop=old.attn_drop.p, proj_drop=old.proj_drop.p, **dd)
        for name in _TIMM_ATTENTION_MODULES:
            setattr(new, name, getattr(old, name))
        blk.attn = new


def apply_karat_to_dense_blocks(
    blocks: nn.ModuleList,
    feat_hw: tuple[int, int],
    attn_cfg: Mapping[str, Any] | None,
    shared: nn.ModuleDict | None = None,
) -> None:
    """Replaces the attention of ViTDet/SAM-style blocks (timm ``vision_transformer_sam.Block``) by
    :class:`KArAtWindowAttention`, in place.

    Window blocks get N = window_size ** 2 (windows are padded to full size, so N never changes). Global blocks get
    N = H * W of ``feat_hw`` (the grid of the backbone's ``img_size``): the operator is fixed to that grid and an
    input with another grid fails with a clear error; ``attn_cfg['global_attn']='softmax'`` keeps the global
    blocks on softmax attention instead. ``universal`` mode shares one operator per token count, i.e. one for all
    window blocks and one for all global blocks, stored in ``shared`` (keys ``'n{N}'``).

    Args:
        blocks: the blocks (each with ``attn``, ``window_size``).
        feat_hw: the token grid (H, W) of the backbone's ``img_size``.
        attn_cfg: :func:`resolve_karat_cfg` keys plus ``global_attn`` (``'fourier_karat'`` or ``'softmax'``).
        shared: where universal operators are registered (needed for ``mode='universal'``).
    """
    cfg = resolve_karat_cfg(attn_cfg, extra_keys=("global_attn",))
    global_attn = cfg.pop("global_attn", "fourier_karat")
    if global_attn not in ("fourier_karat", "softmax"):
        raise ValueError(f"attn_cfg: global_attn must be 'fourier_karat' or 'softmax', got {global_attn!r}")
    if cfg["mode"] == "universal" and shared is None:
        raise ValueError("universal Fourier-KArAt needs a ModuleDict to register the shared operators in")
    for blk in blocks:
        old = blk.attn
        if not isinstance(old, SamAttention):
            raise TypeError(f"expected timm vision_transformer_sam.Attention, got {type(old).__name__}")
        if blk.window_size > 0:
            num_tokens = blk.window_size**2
        elif global_attn == "softmax":
            continue
        else:
            num_tokens = feat_hw[0] * feat_hw[1]
        operator = None
        if cfg["mode"] == "universal":
            key = f"n{num_tokens}"
            if key not in shared:
                shared[key] = make_karat_operator(old.num_heads, num_tokens, cfg)
            operator = shared[key]
        input_size = None
        if old.use_rel_pos:
            input_size = ((old.rel_pos_h.shape[0] + 1) // 2, (old.rel_pos_w.shape[0] + 1) // 2)
        blk.attn = KArAtWindowAttention(
            old.qkv.in_features,
            num_heads=old.num_heads,
            num_tokens=num_tokens,
            karat_cfg=cfg,
            operator=operator,
            qkv_bias=old.qkv.bias is not None,
            qk_norm=not isinstance(old.q_norm, nn.Identity),
            attn_drop=old.attn_drop.p,
            proj_drop=old.proj_drop.p,
            use_rel_pos=old.use_rel_pos,
            input_size=input_size,
            rope=old.rope,
            device=old.qkv.weight.device,
            dtype=old.qkv.weight.dtype,
        )
