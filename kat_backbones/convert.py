"""Weight transfer: timm ViT/DeiT weights into KAT models, and KAT checkpoints in other layouts.

The "KAT*" transfer of the KAT paper ("from ViT" in its ImageNet table: KAT-T/S/B reach 75.7/82.0/82.8 top-1 this way
against 74.6/81.2/82.3 from scratch): every ViT weight is copied (patch embed, cls token, pos embed, attention, norms,
``mlp.fc1``/``mlp.fc2`` unchanged, head), and the rationals keep their init: act1 identity and act2 swish or gelu
(use a ``*_gelu_*`` model to start close to the GELU ViT)::

    from kat_backbones.checkpoint import read_state_dict
    from kat_backbones.convert import vit_to_kat_state_dict
    kat = timm.create_model('kat_tiny_gelu_patch16_224')
    kat.load_state_dict(vit_to_kat_state_dict(read_state_dict('vit_tiny.pth'), kat))

Files are read by :mod:`kat_backbones.checkpoint`.

Command line: ``python tools/convert_checkpoint.py SRC DST --model kat_tiny_gelu_patch16_224``.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping

import torch
from torch import nn

from kat_backbones.checkpoint import read_state_dict, unwrap_state_dict

__all__ = [
    "RATIONAL_KEY",
    "is_kat_state_dict",
    "vit_to_kat_state_dict",
    "load_kat_weights",
]

_logger = logging.getLogger(__name__)

RATIONAL_KEY = re.compile(r"(^|\.)act[12]\.weight_(numerator|denominator)$")
"""Matches the rational coefficient keys of a KAT state dict (``blocks.N.mlp.act1.weight_numerator``, ...)."""

_FOREIGN_KEYS = ("dist_token", "head_dist.weight", "head_dist.bias")  # DeiT distillation extras


def is_kat_state_dict(state_dict: Mapping[str, torch.Tensor]) -> bool:
    """True when the state dict carries rational coefficients (a KAT checkpoint rather than a ViT one)."""
    return any(RATIONAL_KEY.search(k) for k in state_dict)


def _filter_for_model(state_dict: dict[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
    """timm's ViT checkpoint filter (patch-embed / pos-embed resizing, foreign layouts) when the model is a ViT."""
    from timm.models.vision_transformer import VisionTransformer, checkpoint_filter_fn

    if isinstance(model, VisionTransformer):
        return checkpoint_filter_fn(state_dict, model)
    return dict(state_dict)


def _fit_rational_shapes(
    state_dict: dict[str, torch.Tensor], target: Mapping[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    """Reshapes rational coefficients stored with another layout but the same size (e.g. a 1-D numerator)."""
    out = dict(state_dict)
    for key, value in state_dict.items():
        if RATIONAL_KEY.search(key) and key in target:
            want = target[key].shape
            if value.shape != want and value.numel() == target[key].numel():
                out[key] = value.reshape(want)
    return out


def vit_to_kat_state_dict(
    vit_state_dict: Mapping[str, torch.Tensor], model: nn.Module, strict: bool = True
) -> dict[str, torch.Tensor]:
    """Turns a timm ViT/DeiT state dict into a state dict for the KAT ``model`` (the paper's KAT* transfer).

    All ViT tensors are copied (resized by timm's ViT checkpoint filter where the grid or patch size differs); the
    rational coefficients (keys matching :data:`RATIONAL_KEY`) are taken from ``model``, i.e. keep its init
    (act1 identity, act2 swish or gelu). DeiT distillation extras (``dist_token``, ``head_dist``) are dropped.

    Args:
        vit_state_dict: the ViT weights (a state dict or checkpoint dict, see
            :func:`kat_backbones.checkpoint.unwrap_state_dict`).
        model: the target KAT model (its rationals supply the coefficients; its keys define the result).
        strict: raise if the ViT lacks a non-rational tensor of the model, has a tensor the model lacks (other
            than the DeiT extras), or a shape differs. Defaults to True.

    Returns:
        A state dict with exactly the model's keys that ``model.load_state_dict(..., strict=True)`` accepts.
    """
    vit = unwrap_state_dict(vit_state_dict)
    if is_kat_state_dict(vit):
        _logger.warning("vit_to_kat_state_dict: the source already has rational coefficients; they are replaced")
    dropped = [k for k in vit if k in _FOREIGN_KEYS]
    vit = {k: v for k, v in vit.items() if k not in _FOREIGN_KEYS and not RATIONAL_KEY.search(k)}
    vit = _filter_for_model(vit, model)
    target = model.state_dict()
    out: dict[str, torch.Tensor] = {}
    missing, mismatched = [], []
    for key, ref in target.items():
        if RATIONAL_KEY.search(key):
            out[key] = ref.detach().clone()
        elif key in vit:
            if vit[key].shape != ref.shape:
                mismatched.append(f"{key}: checkpoint {tuple(vit[key].shape)} vs model {tuple(ref.shape)}")
            out[key] = vit[key].to(ref.dtype)
        else:
            missing.append(key)
    unexpected = sorted(set(vit) - set(target))
    if dropped:
        _logger.info("vit_to_kat_state_dict: dropped DeiT extras %s", dropped)
    problems = []
    if missing:
        problems.append(f"missing in the ViT checkpoint: {missing}")
    if unexpected:
        problems.append(f"not in the KAT model: {unexpected}")
    if mismatched:
        problems.append(f"shape mismatch: {mismatched}")
    if problems:
        message = "vit_to_kat_state_dict: " + "; ".join(problems)
        if strict:
            raise ValueError(message)
        _logger.warning(message)
        out = {k: v for k, v in out.items() if k not in missing and v.shape == target[k].shape}
    return out


def load_kat_weights(
    model: nn.Module, checkpoint: str | os.PathLike | Mapping[str, torch.Tensor], strict: bool = True
) -> nn.Module:
    """Loads KAT weights (official or converted) into ``model``; a ViT/DeiT checkpoint is transferred first.

    Args:
        model: a KAT model.
        checkpoint: a file path (.pth/.pt/.bin/.safetensors), ``timm:NAME[.TAG]`` or a state dict (read by
            :func:`kat_backbones.checkpoint.read_state_dict`).
        strict: strict loading. Defaults to True.

    Returns:
        ``model``.
    """
    sd = read_state_dict(checkpoint)
    if is_kat_state_dict(sd):
        sd = _fit_rational_shapes(_filter_for_model(sd, model), model.state_dict())
    else:
        sd = vit_to_kat_state_dict(sd, model, strict=strict)
    model.load_state_dict(sd, strict=strict)
    return model
