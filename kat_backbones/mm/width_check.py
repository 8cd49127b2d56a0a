"""Backbone / neck / head width agreement, checked on the config before anything is built: :func:`check_widths`.

A neck or head configured for another backbone width (``neck.backbone_channel=768`` with ``arch='tiny'``) builds
fine and fails at the first forward inside a convolution, after the data pipeline, the pretrained weights and the
first batch have been loaded. The widths are plain config values, so they are compared up front.
"""

from __future__ import annotations

from typing import Any

from kat_backbones.models.kat import KAT_ARCHS

__all__ = ["backbone_width", "check_widths"]


def _type_name(cfg: Any) -> str:
    return str(cfg.get("type", "")).rsplit(".", 1)[-1] if isinstance(cfg, dict) else ""


def backbone_width(backbone: Any) -> int | None:
    """The channel count of a ``kat_backbones.KATBackbone`` config's outputs (None for other backbones or an
    unreadable ``arch``)."""
    if _type_name(backbone) != "KATBackbone":
        return None
    arch = backbone.get("arch", "tiny")
    if isinstance(arch, str):
        return KAT_ARCHS[arch]["embed_dim"] if arch in KAT_ARCHS else None
    if isinstance(arch, dict) and isinstance(arch.get("embed_dims"), int):
        return arch["embed_dims"]
    return None


def check_widths(model: Any) -> None:
    """Raises when the neck (``kat_backbones.SimpleFPN``'s ``backbone_channel``, mmseg ``Feature2Pyramid``'s
    ``embed_dim``) or, behind ``Feature2Pyramid`` (which keeps the width), the decode/auxiliary heads'
    ``in_channels`` disagree with the KAT backbone's width.

    Args:
        model (dict): The ``model`` config of a detector / segmentor.

    Raises:
        ValueError: Names the config key, its value, and the backbone's width.
    """
    if not isinstance(model, dict):
        return
    width = backbone_width(model.get("backbone"))
    if width is None:
        return
    arch = model["backbone"].get("arch", "tiny")
    neck = model.get("neck")
    checks: list[tuple[str, Any]] = []
    if _type_name(neck) == "SimpleFPN":
        checks.append(("model.neck.backbone_channel", neck.get("backbone_channel")))
    elif _type_name(neck) == "Feature2Pyramid":
        checks.append(("model.neck.embed_dim", neck.get("embed_dim")))
        for head in ("decode_head", "auxiliary_head"):
            cfg = model.get(head)
            channels = cfg.get("in_channels") if isinstance(cfg, dict) else None
            for i, c in enumerate(channels if isinstance(channels, (list, tuple)) else [channels]):
                key = f"model.{head}.in_channels" + (f"[{i}]" if isinstance(channels, (list, tuple)) else "")
                checks.append((key, c))
    for key, value in checks:
        if value is not None and value != width:
            raise ValueError(
                f"{key}={value} does not match the backbone: kat_backbones.KATBackbone arch={arch!r} outputs {width} "
                f"channels; set {key} to {width} (the tiny/small/base configs set 192/384/768)"
            )
