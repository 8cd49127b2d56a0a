"""Kolmogorov-Arnold Transformer (KAT) for timm: timm's VisionTransformer with the GR-KAN layer as its MLP.

Yang & Wang, "Kolmogorov-Arnold Transformer", ICLR 2025 (arXiv 2409.10594).

``import kat_backbones`` registers, in timm's model registry::

    kat_{tiny,small,base}_{swish,gelu}_patch16_224     act2 initialised as swish / gelu
    kat_{tiny,small,base}_patch16_224                  aliases of the swish models (the released checkpoints)

Everything but the MLP is timm's ViT (cls token, learned abs pos-embed, pre-norm blocks, LayerNorm eps 1e-6,
qkv bias, no LayerScale), so ``features_only=True``, ``forward_intermediates`` and timm's checkpoint filter
(pos-embed / patch-embed resizing) come with it. State-dict keys match the released KAT checkpoints
(``blocks.N.mlp.act1.weight_numerator``, ``blocks.N.mlp.fc1.weight``, ...), which load strictly. The released
weights are pretrained tags of the alias names (:mod:`kat_backbones.models.pretrained`)::

    timm.create_model('kat_tiny_patch16_224', pretrained=True)                     # .in1k, from scratch
    timm.create_model('kat_small_patch16_224.vitft_in1k', pretrained=True)         # initialised from a ViT
    timm.create_model('kat_tiny_patch16_224', pretrained=True, pretrained_cfg_overlay=dict(file='kat_tiny.pth'))

Initialisation: timm's ViT init, then the KAN init of fc1/fc2 (``kan_init``). The default is
``'variance_preserving'`` (the paper's S3, see :class:`kat_backbones.layers.KAN`); pass ``kan_init='reference'``
for the reference code's trunc_normal(std=0.02), with which the released checkpoints were trained.
"""

from __future__ import annotations

import numbers
from functools import partial
from typing import Any, Mapping

from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model, resolve_pretrained_cfg
from timm.models.vision_transformer import VisionTransformer, checkpoint_filter_fn

from kat_backbones.layers import KAN, KANBlock, kan_init_

from .karat import AttnType, KArAtVisionTransformer
from .pretrained import released_pretrained_cfgs, resolve_pretrained_file

__all__ = ["KAT_ARCHS", "create_kat"]

KAT_ARCHS: dict[str, dict[str, int]] = {
    "tiny": dict(patch_size=16, embed_dim=192, depth=12, num_heads=3),
    "small": dict(patch_size=16, embed_dim=384, depth=12, num_heads=6),
    "base": dict(patch_size=16, embed_dim=768, depth=12, num_heads=12),
}
"""ViT-Ti/S/B sizes of KAT-T/S/B: the one architecture table of the timm models and of the dense backbone
(:class:`kat_backbones.models.dense.KATDense`, ``arch='tiny'`` ...). Keys are timm's VisionTransformer arguments."""

_KAN_ARGS = ("act_init", "kan_init", "num_groups", "rational_order", "shared_numerator", "kan_impl")
"""Arguments of :func:`create_kat` that go to every :class:`~kat_backbones.layers.KAN` (their defaults are KAN's)."""


def _cfg(url: str = "", **kwargs: Any) -> dict[str, Any]:
    return {
        "url": url,
        "num_classes": 1000,
        "input_size": (3, 224, 224),
        "pool_size": None,
        "crop_pct": 0.875,
        "interpolation": "bicubic",
        "fixed_input_size": True,
        "mean": IMAGENET_DEFAULT_MEAN,
        "std": IMAGENET_DEFAULT_STD,
        "first_conv": "patch_embed.proj",
        "classifier": "head",
        **kwargs,
    }


# the alias names carry the released weights (tags .in1k, the default, and .vitft_in1k); the swish / gelu names are
# the from-scratch entries and have none
default_cfgs = generate_default_cfgs({
    **released_pretrained_cfgs(_cfg()),
    **{f"kat_{size}{act}_patch16_224": _cfg() for size in KAT_ARCHS for act in ("_swish", "_gelu")},
})


def create_kat(
    variant: str,
    pretrained: bool = False,
    attn_type: AttnType = "softmax",
    attn_cfg: Mapping[str, Any] | None = None,
    check_hash: bool | None = None,
    **kwargs: Any,
) -> VisionTransformer:
    """Builds a KAT model: timm's VisionTransformer with ``mlp_layer=KAN`` through ``build_model_with_cfg``.

    Args:
        variant: registered model name (selects the pretrained cfg).
        pretrained: load the pretrained weights of the cfg: the released file is downloaded from its official
            location (or taken from timm's cache) and its SHA-256 checked (:mod:`kat_backbones.models.pretrained`);
            give a local file with ``pretrained_cfg_overlay=dict(file=...)``. Defaults to False.
        attn_type: ``'softmax'`` (timm's attention) or ``'fourier_karat'`` (Fourier-KArAt,
            :mod:`kat_backbones.layers.karat`; N = 197 at 224/16, fixed by ``img_size``). Defaults to ``'softmax'``.
        attn_cfg: Fourier-KArAt settings ``grid`` (3), ``rank`` (12), ``mode`` (``'blockwise'`` or
            ``'universal'``: one operator per head shared by all blocks), ``init_std`` (None: variance-preserving).
            Defaults to None.
        check_hash: check a weights file's SHA-256 against the 64-hex string in its name. Defaults to None: on,
            unless the environment variable ``KAT_BACKBONES_CHECK_HASH=0``.
        **kwargs: :class:`~kat_backbones.layers.KAN` arguments for every block's MLP (``act_init``: initial function
            of act2, ``'swish'``, ``'gelu'`` ...; ``kan_init``: ``'variance_preserving'`` or ``'reference'``;
            ``num_groups``; ``rational_order``; ``shared_numerator``; ``kan_impl``: ``'auto'``, ``'unfused'``,
            ``'fused'`` or ``'triton'``; defaults: KAN's), VisionTransformer arguments
            (``img_size``, ``drop_path_rate``, ``num_classes``, ...) and timm builder arguments (``features_only``,
            ``out_indices``, ...).
    """
    out_indices = kwargs.pop("out_indices", 3)
    # build-time validation (docs/reliability.md): timm would fail at the first forward (drop_path_rate >= 1 in
    # bernoulli_) or silently drop the border pixels (img_size)
    dpr = kwargs.get("drop_path_rate", 0.0)
    if isinstance(dpr, bool) or not isinstance(dpr, numbers.Real) or not 0 <= dpr < 1:
        raise ValueError(f"drop_path_rate must be a number in [0, 1) (the last block's drop rate), got {dpr!r}")
    img_size, patch_size = kwargs.get("img_size", 224), kwargs.get("patch_size", 16)
    img_hw = (img_size, img_size) if isinstance(img_size, int) else tuple(img_size)
    patch_hw = (patch_size, patch_size) if isinstance(patch_size, int) else tuple(patch_size)
    if not kwargs.get("dynamic_img_pad", False) and (img_hw[0] % patch_hw[0] or img_hw[1] % patch_hw[1]):
        raise ValueError(
            f"img_size {img_size} must be divisible by patch_size {patch_size} (or pass dynamic_img_pad=True)"
        )
    if attn_type == "fourier_karat":  # Fourier-KArAt in every block (kat_backbones.models.karat)
        model_cls, kwargs["attn_cfg"] = KArAtVisionTransformer, attn_cfg
    elif attn_type == "softmax" and not attn_cfg:
        model_cls = VisionTransformer
    else:
        raise ValueError(f"attn_type must be 'softmax' (without attn_cfg) or 'fourier_karat', got {attn_type!r}")
    if pretrained:  # fetch + verify the released file here; timm's own pretrained path then loads it as a file
        overlay = dict(kwargs.get("pretrained_cfg_overlay") or {})
        cfg = resolve_pretrained_cfg(variant, kwargs.get("pretrained_cfg"), dict(overlay)).to_dict()
        file = resolve_pretrained_file(cfg, cache_dir=kwargs.get("cache_dir"), check_hash=check_hash)
        if file is not None:
            kwargs["pretrained_cfg_overlay"] = {**overlay, "file": file}
    kan_kwargs = {k: kwargs.pop(k) for k in _KAN_ARGS if k in kwargs}
    kwargs.setdefault("mlp_layer", partial(KAN, **kan_kwargs))
    # timm's Block, except that it hands the pre-MLP LayerNorm to the KAN, which fuses it with act1 (kan_impl)
    kwargs.setdefault("block_fn", KANBlock)
    model = build_model_with_cfg(
        model_cls,
        variant,
        pretrained,
        pretrained_filter_fn=checkpoint_filter_fn,
        feature_cfg=dict(out_indices=out_indices, feature_cls="getter"),
        **kwargs,
    )
    # timm's ViT init overwrote every Linear and then called KAN.init_weights(); re-apply explicitly so the KAN init
    # holds whatever timm's init did (not after loading weights, and not over fix_init's rescaled fc2).
    if not pretrained and not getattr(model, "fix_init", False):
        kan_init_(model)
    return model


def _entry(size: str, default_act_init: str, variant: str, pretrained: bool, **kwargs: Any) -> VisionTransformer:
    # an explicit act_init=... (e.g. the act2-init ablation) overrides the entry point's default
    return create_kat(variant, pretrained=pretrained, **{**KAT_ARCHS[size], "act_init": default_act_init, **kwargs})


@register_model
def kat_tiny_swish_patch16_224(pretrained: bool = False, **kwargs: Any) -> VisionTransformer:
    """KAT-T/16, swish-initialised act2 (5,718,328 parameters)."""
    return _entry("tiny", "swish", "kat_tiny_swish_patch16_224", pretrained, **kwargs)


@register_model
def kat_tiny_gelu_patch16_224(pretrained: bool = False, **kwargs: Any) -> VisionTransformer:
    """KAT-T/16, gelu-initialised act2 (the variant to transfer ViT-Ti weights into)."""
    return _entry("tiny", "gelu", "kat_tiny_gelu_patch16_224", pretrained, **kwargs)


@register_model
def kat_tiny_patch16_224(pretrained: bool = False, **kwargs: Any) -> VisionTransformer:
    """KAT-T/16, alias of ``kat_tiny_swish_patch16_224``."""
    return _entry("tiny", "swish", "kat_tiny_patch16_224", pretrained, **kwargs)


@register_model
def kat_small_swish_patch16_224(pretrained: bool = False, **kwargs: Any) -> VisionTransformer:
    """KAT-S/16, swish-initialised act2 (22,051,576 parameters)."""
    return _entry("small", "swish", "kat_small_swish_patch16_224", pretrained, **kwargs)


@register_model
def kat_small_gelu_patch16_224(pretrained: bool = False, **kwargs: Any) -> VisionTransformer:
    """KAT-S/16, gelu-initialised act2."""
    return _entry("small", "gelu", "kat_small_gelu_patch16_224", pretrained, **kwargs)


@register_model
def kat_small_patch16_224(pretrained: bool = False, **kwargs: Any) -> VisionTransformer:
    """KAT-S/16, alias of ``kat_small_swish_patch16_224``."""
    return _entry("small", "swish", "kat_small_patch16_224", pretrained, **kwargs)


@register_model
def kat_base_swish_patch16_224(pretrained: bool = False, **kwargs: Any) -> VisionTransformer:
    """KAT-B/16, swish-initialised act2 (86,568,568 parameters)."""
    return _entry("base", "swish", "kat_base_swish_patch16_224", pretrained, **kwargs)


@register_model
def kat_base_gelu_patch16_224(pretrained: bool = False, **kwargs: Any) -> VisionTransformer:
    """KAT-B/16, gelu-initialised act2."""
    return _entry("base", "gelu", "kat_base_gelu_patch16_224", pretrained, **kwargs)


@register_model
def kat_base_patch16_224(pretrained: bool = False, **kwargs: Any) -> VisionTransformer:
    """KAT-B/16, alias of ``kat_base_swish_patch16_224``."""
    return _entry("base", "swish", "kat_base_patch16_224", pretrained, **kwargs)
