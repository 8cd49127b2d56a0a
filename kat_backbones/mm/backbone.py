"""OpenMMLab face of the dense KAT backbone: ``kat_backbones.KATBackbone``."""

from __future__ import annotations

import copy
from typing import Any, Mapping, Sequence

from mmengine.logging import MMLogger
from mmengine.model import initialize
from mmengine.runner.checkpoint import CheckpointLoader

from kat_backbones.checkpoint import TIMM_PREFIX
from kat_backbones.models.dense import KATDense

from .layer_decay import get_layer_id
from .registry import MODELS

__all__ = ["KATBackbone"]


@MODELS.register_module()
class KATBackbone(KATDense):
    """:class:`kat_backbones.models.dense.KATDense` for mmdet / mmseg configs (``type='kat_backbones.KATBackbone'``).

    Same arguments and outputs as :class:`~kat_backbones.models.dense.KATDense` (see there; e.g. ``arch='base'``,
    ``img_size=1024``, ``out_indices=(11,)``, ``mlp_type='kan'`` or ``'mlp'``), plus OpenMMLab's ``init_cfg``:

    - ``dict(type='Pretrained', checkpoint=..., prefix=None)`` loads a timm KAT or ViT checkpoint in
      :meth:`init_weights` through :meth:`~kat_backbones.models.dense.KATDense.load_pretrained`: a ``.pth`` /
      ``.safetensors`` file, ``timm:NAME[.TAG]``, or a URL / ``prefix://`` scheme of mmengine's checkpoint loader.
      The cls token and classifier are dropped, the position embedding is resized to the ``pretrain_img_size`` grid
      (the model interpolates it to the feature grid at run time), and missing/unexpected keys are logged to the
      mmengine logger. A ViT checkpoint loaded into a KAT backbone fills everything but the rationals, which keep
      their init (the paper's "KAT from ViT"). A checkpoint that leaves other tensors unfilled (another size,
      another architecture) is refused with :class:`~kat_backbones.models.state_fit.CheckpointMismatchError` unless
      the init_cfg says ``allow_partial=True``;
    - other types (e.g. ``TruncNormal``) are handed to :func:`mmengine.model.initialize`.

    Args:
        *args: :class:`~kat_backbones.models.dense.KATDense` arguments.
        init_cfg (dict | list[dict], optional): See above. Defaults to None.
        **kwargs: :class:`~kat_backbones.models.dense.KATDense` arguments.
    """

    def __init__(
        self, *args: Any, init_cfg: Mapping[str, Any] | Sequence[Mapping[str, Any]] | None = None, **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        self.init_cfg = copy.deepcopy(init_cfg)

    def get_layer_depth(self, param_name: str, prefix: str = "") -> tuple[int, int]:
        """Layer depth of a parameter for layer-wise lr decay, in mmpretrain's convention (as its
        ``VisionTransformer.get_layer_depth``), so mmpretrain's ``LearningRateDecayOptimWrapperConstructor`` accepts
        an ``ImageClassifier`` with this backbone.

        Args:
            param_name (str): Parameter name in the whole model, e.g. ``'backbone.blocks.3.attn.qkv.weight'``.
            prefix (str): The backbone's prefix in ``param_name`` (``'backbone.'`` from ``ImageClassifier``).
                Defaults to ''.

        Returns:
            tuple[int, int]: ``(depth, num_layers + 2)``: 0 for the patch and position embedding, ``i + 1`` for
            ``blocks.i``, ``num_layers + 1`` for the rest of the backbone and for parameters outside it (neck, head).
        """
        total = self.num_layers + 2
        if not param_name.startswith(prefix):
            return total - 1, total
        return get_layer_id(param_name[len(prefix):], self.num_layers), total

    def init_weights(self) -> None:
        """Load the ``Pretrained`` checkpoint of ``init_cfg``; other init types go through mmengine."""
        cfgs = self.init_cfg if isinstance(self.init_cfg, (list, tuple)) else [self.init_cfg] if self.init_cfg else []
        for cfg in cfgs:
            cfg = dict(cfg)
            if cfg.get("type") != "Pretrained":
                initialize(self, cfg)
                continue
            checkpoint = cfg["checkpoint"]
            if isinstance(checkpoint, str) and "://" in checkpoint and not checkpoint.startswith(TIMM_PREFIX):
                # URLs and mmengine's schemes (open-mmlab://, torchvision://, ...): fetched by mmengine's loader
                checkpoint = CheckpointLoader.load_checkpoint(checkpoint, map_location="cpu")
            self.load_pretrained(
                checkpoint,
                prefix=cfg.get("prefix"),
                logger=MMLogger.get_current_instance(),
                allow_partial=cfg.get("allow_partial", False),
            )
        self.is_init = True
