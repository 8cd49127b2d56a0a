"""Parameters and FLOPs of a timm model or of an OpenMMLab config's model, for ``tools/get_flops.py`` and
``tools/ablate.py``.

The counting is :func:`kat_backbones.flops.count_flops`; this module builds what it measures: a registered timm model
at an input size, or the model of a config file (the ``kat_backbones.mm`` glue registers the scope; the config is
made CPU-runnable, the model put in eval mode) with the forward pass that matters, the backbone + neck
(``extract_feat``) of a detector or segmentor, else the whole network (``model(x, mode='tensor')``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from kat_backbones.flops import FlopReport, count_flops

__all__ = ["Target", "parse_hw", "config_input_size", "build_target", "timm_target", "config_target", "measure"]


@dataclass
class Target:
    """A model, the forward pass to count, and what it is (``description``; ``counted``: what the FLOPs cover)."""

    model: nn.Module
    forward: Callable[[], Any]
    description: str
    counted: str
    input_hw: tuple[int, int]


def parse_hw(shape: Sequence[int] | None, option: str = "--shape") -> tuple[int, int] | None:
    """``[S]`` -> ``(S, S)``, ``[H, W]`` -> ``(H, W)``, nothing -> None; other lengths: ValueError naming
    ``option``."""
    if not shape:
        return None
    if len(shape) == 1:
        return int(shape[0]), int(shape[0])
    if len(shape) == 2:
        return int(shape[0]), int(shape[1])
    raise ValueError(f"{option} takes one or two sizes, got {list(shape)}")


def config_input_size(cfg: Any) -> tuple[int, int]:
    """The training input size a config implies: backbone img_size, classifier img_size, or preprocessor size."""
    model = cfg.model
    for value in (
        model.get("backbone", {}).get("img_size") if isinstance(model.get("backbone"), dict) else None,
        model.get("img_size"),
        (model.get("data_preprocessor") or {}).get("size"),
    ):
        if value is None:
            continue
        if isinstance(value, int):
            return value, value
        return int(value[0]), int(value[1])
    return 224, 224


def build_target(target: str, hw: tuple[int, int] | None = None, batch: int = 1,
                 cfg_options: dict | None = None) -> Target:
    """A config file (a path ending in ``.py``: :func:`config_target`) or a timm model name (:func:`timm_target`)."""
    if target.endswith(".py"):
        return config_target(target, hw, batch, cfg_options)
    if cfg_options:
        raise ValueError(f"cfg_options apply to config files only, not to the timm model {target!r}")
    return timm_target(target, hw, batch)


def timm_target(name: str, hw: tuple[int, int] | None = None, batch: int = 1) -> Target:
    """A registered timm model (at ``hw``, else its default input size) and its forward pass."""
    import timm

    import kat_backbones.models  # noqa: F401  (registers the timm KAT models)

    if not timm.is_model(name):
        raise ValueError(f"{name!r} is neither a registered timm model nor a .py config file")
    model = timm.create_model(name, pretrained=False, **({"img_size": hw} if hw else {}))
    in_chans, h, w = (3, *hw) if hw else model.pretrained_cfg.get("input_size", (3, 224, 224))
    x = torch.randn(batch, in_chans, h, w)
    return Target(model, lambda: model(x), f"{name} @ {batch}x{in_chans}x{h}x{w}", "model", (h, w))


def config_target(path: str, hw: tuple[int, int] | None = None, batch: int = 1,
                  cfg_options: dict | None = None) -> Target:
    """The model of an OpenMMLab config (with ``cfg_options`` merged) at ``hw`` (default: the config's input size)
    and its forward pass: ``extract_feat`` (backbone + neck) when the model has it, else the network."""
    import copy

    try:
        from mmengine.config import Config
        from mmengine.registry import MODELS, init_default_scope

        from kat_backbones.mm import convert_cfg_for_cpu
    except ImportError as err:
        raise ImportError(
            f"config files need the OpenMMLab glue (kat_backbones.mm with mmengine/mmcv/mmdet/mmseg), "
            f"which could not be imported: {err}"
        ) from None
    cfg = Config.fromfile(path)
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    model_cfg = copy.deepcopy(cfg.model)
    convert_cfg_for_cpu(model_cfg)
    init_default_scope(cfg.get("default_scope", "mmdet"))
    model = MODELS.build(model_cfg)
    model.eval()
    h, w = hw or config_input_size(cfg)
    x = torch.randn(batch, 3, h, w)
    # parameters per top-level part (backbone / neck / heads), e.g. a detector's rpn_head and roi_head
    parts = [(name, sum(p.numel() for p in child.parameters())) for name, child in model.named_children()]
    total = sum(p.numel() for p in model.parameters())
    params = ", ".join([f"{name} {n / 1e6:.2f} M" for name, n in parts if n] + [f"total {total / 1e6:.2f} M"])
    if hasattr(model, "extract_feat"):
        description = f"{path} (FLOPs: backbone + neck; params: whole model) @ {batch}x3x{h}x{w}\nparams: {params}"
        return Target(model, lambda: model.extract_feat(x), description, "backbone+neck", (h, w))
    return Target(model, lambda: model(x, mode="tensor"), f"{path} @ {batch}x3x{h}x{w}\nparams: {params}", "model",
                  (h, w))


def measure(target: Target) -> FlopReport:
    """Parameters and FLOPs (paper convention and full) of one forward pass of ``target``."""
    return count_flops(target.model, forward=target.forward)
