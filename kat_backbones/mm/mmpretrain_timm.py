"""mmpretrain's ``TimmClassifier`` with checkpoints that survive mmengine's EMA
(``kat_backbones.MMPretrainTimmClassifier``).

Used by ``configs/mmpretrain`` (the official KAT recipe over mmpretrain's bases); needs mmpretrain, so it is not
imported by ``import kat_backbones``: configs list it in ``custom_imports``.

Why a subclass: mmpretrain 1.2.0's ``TimmClassifier`` strips the ``model.`` prefix from its state dict (so checkpoints
carry timm's key names) with a state-dict hook that *returns* a renamed dict. torch uses a returned dict only for the
module whose ``state_dict()`` was called, so inside a wrapper the keys keep the prefix: mmengine's EMA model
(``ExponentialMovingAverage``) saves ``module.model.cls_token`` while the model saves ``cls_token``, and ``EMAHook``'s
checkpoint swap fails with ``KeyError: 'model.cls_token'`` at the first checkpoint of any EMA run (the KAT recipe uses
EMA 0.9999). Here the same renaming is done in place by a public post-hook, which works at any depth; the checkpoint
layout is mmpretrain's (timm names at the top level, ``module.<timm name>`` in ``ema_state_dict``), and loading keeps
mmpretrain's own pre-hook, which already works nested.
"""

from __future__ import annotations

from typing import Any

from mmpretrain.models import TimmClassifier
from torch import nn

from .registry import MODELS

__all__ = ["MMPretrainTimmClassifier"]


def _strip_model_prefix(module: nn.Module, state_dict: dict, prefix: str, local_metadata: Any) -> None:
    inner = prefix + "model."
    for key in [k for k in state_dict if k.startswith(inner)]:
        state_dict[prefix + key[len(inner):]] = state_dict.pop(key)


@MODELS.register_module()
class MMPretrainTimmClassifier(TimmClassifier):
    """mmpretrain's :class:`~mmpretrain.models.TimmClassifier` (same arguments: ``model_name``, ``loss``,
    ``train_cfg=dict(augments=...)``, timm kwargs such as ``drop_path_rate``) whose state dict drops the ``model.``
    prefix in place, so it also does so inside wrappers (EMA). See the module docstring."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # replace mmpretrain's returning hook (registered without a handle) by the in-place one
        self._state_dict_hooks.clear()
        self.register_state_dict_post_hook(_strip_model_prefix)
