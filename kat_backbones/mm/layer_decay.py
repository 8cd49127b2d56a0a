"""Layer-wise learning-rate decay for the plain KAT/ViT backbone: ``kat_backbones.LayerDecayOptimizerConstructor``.

mmdet's ViTDet constructor lives in ``projects/`` (not in the wheel), and mmseg's keys on its own backbones' names, so
the package has its own, which knows :class:`~kat_backbones.models.dense.KATDense`'s layout and the GR-KAN
coefficients.
"""

from __future__ import annotations

import numbers
import re
from typing import Any

import torch.nn as nn
from mmengine.logging import MMLogger
from mmengine.optim import DefaultOptimWrapperConstructor
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.modules.instancenorm import _InstanceNorm

from .registry import OPTIM_WRAPPER_CONSTRUCTORS

__all__ = ["LayerDecayOptimizerConstructor", "get_layer_id"]

_NORM_TYPES = (_BatchNorm, _InstanceNorm, nn.GroupNorm, nn.LayerNorm)  # LN2d is an nn.LayerNorm
_POS_NAMES = ("pos_embed", "cls_token")
_REL_POS_NAMES = ("rel_pos_h", "rel_pos_w")
_RATIONAL_NAMES = ("weight_numerator", "weight_denominator")
_BLOCK_RE = re.compile(r"^blocks\.(\d+)\.")


def get_layer_id(name: str, num_layers: int) -> int:
    """Layer id of a backbone parameter name (relative to the backbone): 0 for the patch/position embedding,
    ``i + 1`` for ``blocks.i``, ``num_layers + 1`` for anything after the blocks.

    Args:
        name (str): Parameter name inside the backbone, e.g. ``'blocks.3.attn.qkv.weight'``.
        num_layers (int): Number of blocks.

    Returns:
        int: The layer id in ``[0, num_layers + 1]``.
    """
    if name in ("pos_embed", "cls_token", "mask_token") or name.startswith("patch_embed."):
        return 0
    match = _BLOCK_RE.match(name)
    if match:
        return int(match.group(1)) + 1
    return num_layers + 1


@OPTIM_WRAPPER_CONSTRUCTORS.register_module()
class LayerDecayOptimizerConstructor(DefaultOptimWrapperConstructor):
    """Optimizer-wrapper constructor with layer-wise lr decay (BEiT / MAE / ViTDet) for the KAT/ViT backbone.

    Parameter ``p`` in layer ``l`` (0: patch and position embedding, ``i + 1``: block ``i``, ``num_layers + 1``: the
    rest of the backbone and everything outside it, i.e. neck and heads) gets
    ``lr = base_lr * decay_rate ** (num_layers + 1 - l) * lr_mult``. Weight decay is ``base_wd * decay_mult`` where
    ``decay_mult`` is 1 except for the no-decay classes below.

    ``paramwise_cfg`` keys:

    - ``decay_rate`` (float): Per-layer lr decay (alias ``layer_decay_rate``). Defaults to 1.0 (no decay).
    - ``num_layers`` (int, optional): Backbone depth. Defaults to the backbone's ``num_layers`` (or ``len(blocks)``).
    - ``decay_type`` (str): Only ``'layer_wise'``. Defaults to ``'layer_wise'``.
    - ``backbone`` (str): Attribute of the model holding the backbone. Defaults to ``'backbone'`` (a bare backbone
      model works too).
    - ``norm_decay_mult`` (float): Parameters of norm layers (LayerNorm, LN2d, BN, GN). Defaults to 0.
    - ``norm_decay_scope`` (str): Where ``norm_decay_mult`` applies: ``'all'`` (every norm layer of the model) or
      ``'backbone'`` (only the backbone's; neck and head norms are decayed like weights, as in ViTDet). Defaults to
      ``'all'``.
    - ``bias_decay_mult`` (float): Other biases. Defaults to 0.
    - ``pos_embed_decay_mult`` (float): ``pos_embed``, ``cls_token``. Defaults to 0.
    - ``rel_pos_decay_mult`` (float): ``rel_pos_h``/``rel_pos_w``. Defaults to ``pos_embed_decay_mult``.
    - ``rational_decay_mult`` (float): GR-KAN coefficients ``weight_numerator``/``weight_denominator``. Defaults to 0
      (the reference ImageNet recipe decays them; set 1.0 for that).
    - ``custom_keys`` (dict): ``{substring: dict(lr_mult=..., decay_mult=...)}``; the first match (longest key first)
      multiplies on top of the rules above.

    Published rule sets, written with these keys (``configs/mmdet``, ``configs/mmseg``; docs/recipes.md):

    - ViTDet (mmdet ``projects/ViTDet``): only the backbone's norms and ``pos_embed`` undecayed:
      ``norm_decay_scope='backbone', bias_decay_mult=1.0, rel_pos_decay_mult=1.0, rational_decay_mult=1.0``.
    - mmseg's MAE/BEiT constructor: 1-D tensors and biases undecayed (``pos_embed`` is 3-D and decayed):
      ``pos_embed_decay_mult=1.0, rational_decay_mult=1.0``.

    Args:
        optim_wrapper_cfg (dict): The optimizer-wrapper config (``optimizer`` inside).
        paramwise_cfg (dict, optional): See above. Defaults to None.
    """

    def __init__(self, optim_wrapper_cfg: dict, paramwise_cfg: dict | None = None) -> None:
        # build-time validation (docs/reliability.md): a string lr would fail deep inside add_params
        optimizer = optim_wrapper_cfg.get("optimizer") if isinstance(optim_wrapper_cfg, dict) else None
        lr = optimizer.get("lr") if isinstance(optimizer, dict) else None
        if lr is not None and (isinstance(lr, bool) or not isinstance(lr, numbers.Real)):
            raise TypeError(f"optim_wrapper.optimizer.lr must be a number, got {type(lr).__name__} {lr!r}")
        if lr is not None and lr < 0:
            raise ValueError(f"optim_wrapper.optimizer.lr must be >= 0, got {lr!r}")
        super().__init__(optim_wrapper_cfg, paramwise_cfg)

    def add_params(self, params: list[dict], module: nn.Module, **kwargs: Any) -> None:
        """Append the parameter groups of ``module`` to ``params`` (in place)."""
        cfg = self.paramwise_cfg
        logger = MMLogger.get_current_instance()
        decay_type = cfg.get("decay_type", "layer_wise")
        if decay_type != "layer_wise":
            raise ValueError(f"decay_type must be 'layer_wise', got {decay_type!r}")
        decay_rate = float(cfg.get("decay_rate", cfg.get("layer_decay_rate", 1.0)))

        backbone_attr = cfg.get("backbone", "backbone")
        backbone = getattr(module, backbone_attr, None)
        if backbone is not None:
            backbone_prefix = f"{backbone_attr}."
        elif hasattr(module, "blocks"):
            backbone, backbone_prefix = module, ""
        else:
            raise ValueError(f"{type(module).__name__} has no '{backbone_attr}' with blocks to apply layer decay to")
        num_layers = cfg.get("num_layers")
        if num_layers is None:
            num_layers = getattr(backbone, "num_layers", None) or len(backbone.blocks)
        num_layers = int(num_layers)

        mults = {
            "norm": float(cfg.get("norm_decay_mult", 0.0)),
            "bias": float(cfg.get("bias_decay_mult", 0.0)),
            "pos": float(cfg.get("pos_embed_decay_mult", 0.0)),
            "rational": float(cfg.get("rational_decay_mult", 0.0)),
        }
        mults["rel_pos"] = float(cfg.get("rel_pos_decay_mult", mults["pos"]))
        norm_scope = cfg.get("norm_decay_scope", "all")
        if norm_scope not in ("all", "backbone"):
            raise ValueError(f"paramwise_cfg.norm_decay_scope must be 'all' or 'backbone', got {norm_scope!r}")
        custom_keys = cfg.get("custom_keys", {})
        sorted_keys = sorted(sorted(custom_keys), key=len, reverse=True)

        norm_root = module if norm_scope == "all" else backbone
        norm_params = {id(p) for m in norm_root.modules() if isinstance(m, _NORM_TYPES) for p in m.parameters(False)}

        groups: dict[str, dict[str, Any]] = {}
        for name, param in module.named_parameters():
            if not param.requires_grad:
                continue
            if backbone_prefix == "" or name.startswith(backbone_prefix):
                layer_id = get_layer_id(name[len(backbone_prefix) :], num_layers)
            else:
                layer_id = num_layers + 1
            leaf = name.rsplit(".", 1)[-1]
            if id(param) in norm_params:
                kind = "norm"
            elif leaf in _RATIONAL_NAMES:
                kind = "rational"
            elif leaf in _POS_NAMES:
                kind = "pos"
            elif leaf in _REL_POS_NAMES:
                kind = "rel_pos"
            elif leaf == "bias":
                kind = "bias"
            else:
                kind = "weight"
            decay_mult = mults.get(kind, 1.0)
            lr_mult, key_tag = 1.0, ""
            for key in sorted_keys:
                if key in name:
                    lr_mult = float(custom_keys[key].get("lr_mult", 1.0))
                    decay_mult *= float(custom_keys[key].get("decay_mult", 1.0))
                    key_tag = f"_{key}"
                    break
            decay_tag = "no_decay" if decay_mult == 0 else "decay" if decay_mult == 1 else f"decay{decay_mult:g}"
            group_name = f"layer_{layer_id}_{decay_tag}{key_tag}"
            if group_name not in groups:
                scale = decay_rate ** (num_layers + 1 - layer_id)
                group: dict[str, Any] = dict(
                    params=[], param_names=[], group_name=group_name, lr_scale=scale, lr=self.base_lr * scale * lr_mult
                )
                if self.base_wd is not None:
                    group["weight_decay"] = self.base_wd * decay_mult
                groups[group_name] = group
            groups[group_name]["params"].append(param)
            groups[group_name]["param_names"].append(name)

        logger.info(
            f"LayerDecayOptimizerConstructor: decay_rate={decay_rate}, num_layers={num_layers}, "
            f"{len(groups)} parameter groups"
        )
        for g in sorted(groups.values(), key=lambda g: g["group_name"]):
            logger.debug(
                f"  {g['group_name']}: {len(g['params'])} tensors, lr={g['lr']:.3e}, "
                f"weight_decay={g.get('weight_decay')}, e.g. {g['param_names'][:3]}"
            )
        params.extend(groups.values())
