"""Refuse a checkpoint that does not fit the model: ``kat_backbones.CheckpointFitHook``.

mmengine's ``Runner.load_checkpoint`` (``load_from``, ``tools/test.py CONFIG CHECKPOINT``, ``--resume``) loads with
``strict=False`` and only logs "do not match exactly": a KAT-S detector checkpoint in the KAT-T config, or a
segmentation checkpoint in a detection config, is evaluated as a random model and the tool exits 0. This hook
compares the checkpoint's ``state_dict`` with the model (``after_load_checkpoint`` runs before the weights are
copied) and raises :class:`~kat_backbones.models.state_fit.CheckpointMismatchError` naming how many tensors matched,
what is missing or of another shape, and ``--allow-partial-load`` (``allow_partial=True``) for a deliberate partial
load, which then only logs the comparison.
"""

from __future__ import annotations

import logging
import re

from mmengine.hooks import Hook
from mmengine.logging import print_log
from mmengine.model import is_model_wrapper

from kat_backbones.models.state_fit import CheckpointMismatchError, compare_state

from .registry import HOOKS

__all__ = ["CheckpointFitHook"]


@HOOKS.register_module()
class CheckpointFitHook(Hook):
    """Checks every checkpoint the runner loads against the model (``type='kat_backbones.CheckpointFitHook'``).

    Args:
        allow_partial (bool): Only log a checkpoint that leaves model tensors unfilled. Defaults to False (refuse).
    """

    priority = "VERY_HIGH"

    def __init__(self, allow_partial: bool = False) -> None:
        if not isinstance(allow_partial, bool):
            raise TypeError(f"CheckpointFitHook: allow_partial must be a bool, got {allow_partial!r}")
        self.allow_partial = allow_partial

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        state = checkpoint.get("state_dict", checkpoint)
        if not isinstance(state, dict):
            return
        state = {re.sub(r"^module\.", "", k): v for k, v in state.items()}  # as Runner.load_checkpoint's revise_keys
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        fit = compare_state(model.state_dict(), state)
        load_from = getattr(runner, "_load_from", None)
        source = f"checkpoint {load_from}" if isinstance(load_from, str) else "the checkpoint"
        if fit.complete:
            return
        if self.allow_partial:
            print_log(
                f"CheckpointFitHook: partial load (allow_partial): {fit.describe(source)}; the rest keeps its init",
                logger="current",
                level=logging.WARNING,
            )
            return
        message = (
            f"refusing {source}: {fit.describe('it')}. It was not saved from this config's model (another "
            "size, task or architecture?). To load the matching tensors on purpose and keep the rest at its init, "
            "pass --allow-partial-load (tools/train.py, tools/test.py) or "
            "custom_hooks=[dict(type='kat_backbones.CheckpointFitHook', allow_partial=True)]."
        )
        print_log(message, logger="current", level=logging.ERROR)
        raise CheckpointMismatchError(message, fit)
