"""OpenMMLab face of the dense KAT backbone: ``kat_backbones.KATBackbone``."""

from __future__ import annotations

import logging

import torch
from mmengine.logging import MMLogger
from mmengine.model import initialize
from mmengine.runner.checkpoint import CheckpointLoader

from kat_backbones.models.dense import KATDense, load_checkpoint_file

from .registry import MODELS

__all__ = ["KATBackbone"]


@MODELS.register_module()
class KATBackbone(KATDense):
    """:class:`kat_backbones.models.dense.KATDense` for mmdet / mmseg configs (``type='kat_backbones.KATBackbone'``).

    Same arguments and outputs as :class:`~kat_backbones.models.dense.KATDense` (see there; e.g. ``arch='base'``,
    ``img_size=1024``, ``out_indices=(11,)``, ``mlp_type='kan'`` or ``'mlp'``), plus OpenMMLab conveniences:
    messages go to the mmengine logger, ``init_cfg=dict(type='Pretrained', checkpoint=...)`` also accepts the URLs and
    ``prefix://`` schemes of mmengine's checkpoint loader, and other ``init_cfg`` types (e.g. ``TruncNormal``) are
    handed to :func:`mmengine.model.initialize`.

    A timm KAT or ViT checkpoint (``.pth``/``.safetensors`` file or ``timm:NAME``) is converted on the fly: the cls
    token and classifier are dropped, the position embedding is resized to the ``pretrain_img_size`` grid (the model
    interpolates it to the feature grid at run time) and missing/unexpected keys are logged. A ViT checkpoint loaded
    into a KAT backbone fills everything but the rationals, which keep their init (the paper's "KAT from ViT").
    """

    def _get_logger(self) -> logging.Logger:
        return MMLogger.get_current_instance()

    def _read_checkpoint(self, path: str) -> dict[str, torch.Tensor]:
        if path.startswith("timm:") or path.endswith(".safetensors") or "://" not in path:
            return load_checkpoint_file(path)
        state = CheckpointLoader.load_checkpoint(path, map_location="cpu")
        for key in ("state_dict", "model", "module"):
            if isinstance(state, dict) and isinstance(state.get(key), dict):
                return dict(state[key])
        return dict(state)

    def init_weights(self) -> None:
        """Load the ``Pretrained`` checkpoint of ``init_cfg``; other init types go through mmengine."""
        cfgs = self.init_cfg if isinstance(self.init_cfg, list) else [self.init_cfg] if self.init_cfg else []
        for cfg in cfgs:
            cfg = dict(cfg)
            if cfg.get("type") == "Pretrained":
                self.load_pretrained(cfg["checkpoint"], prefix=cfg.get("prefix"))
            else:
                initialize(self, cfg)
        self.is_init = True
