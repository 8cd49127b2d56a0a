"""Every process's random state in checkpoints of distributed runs: ``kat_backbones.DistRNGStateHook``.

:class:`~kat_backbones.mm.hooks.RNGStateHook` saves the random state of a single-process run. In a distributed run
each process has its own stream (RoI sampling, dropout, drop path draw from it), a checkpoint is written by the first
process only (``Runner.save_checkpoint`` is ``master_only``, so ``before_save_checkpoint`` runs there alone), and
mmengine re-seeds every process on resume: a 2-process Mask R-CNN run killed after a checkpoint and resumed samples
other RoIs than the uninterrupted run from the first resumed iteration on.

This hook gathers all processes' states (one ``all_gather_object`` of a few KB) right before each checkpoint the
run's ``CheckpointHook`` is about to write (it runs just before that hook and asks it whether this iteration/epoch
saves), stores them as ``rng_state_per_rank`` in the checkpoint, and on ``--resume`` gives each process its own
state back when the world size is the same (in ``before_train``, after mmengine's own re-seeding on resume).
Single-process runs are left to ``RNGStateHook``. ``tools/train.py`` adds it (``kat_backbones.mm.fault_tolerance``).
"""

from __future__ import annotations

import logging
from typing import Any

from mmengine.dist import all_gather_object, get_rank, get_world_size
from mmengine.hooks import CheckpointHook, Hook
from mmengine.logging import print_log

from .hooks import get_rng_state, set_rng_state
from .registry import HOOKS

__all__ = ["DistRNGStateHook"]


@HOOKS.register_module()
class DistRNGStateHook(Hook):
    """Saves and restores the random state of every process of a distributed run
    (``type='kat_backbones.DistRNGStateHook'``); see the module docstring. Checkpoint key: ``rng_state_per_rank``."""

    priority = "LOW"  # after the optimizer step and logging, before CheckpointHook (VERY_LOW)

    def __init__(self) -> None:
        self._states: list[Any] | None = None
        self._restore: Any = None  # this process's state from the resumed checkpoint, applied in before_train

    @staticmethod
    def _checkpoint_hook(runner) -> CheckpointHook | None:
        return next((h for h in runner.hooks if isinstance(h, CheckpointHook)), None)

    def gather(self) -> None:
        """Collects every process's state now (a collective: all processes must call it)."""
        self._states = all_gather_object(get_rng_state())

    def after_train_iter(self, runner, batch_idx: int, data_batch: Any = None, outputs: Any = None) -> None:
        ckpt = self._checkpoint_hook(runner)
        if get_world_size() < 2 or ckpt is None or ckpt.by_epoch:
            return
        if ckpt.every_n_train_iters(runner, ckpt.interval, ckpt.save_begin) or (
            ckpt.save_last and ckpt.is_last_train_iter(runner)
        ):
            self.gather()

    def after_train_epoch(self, runner) -> None:
        ckpt = self._checkpoint_hook(runner)
        if get_world_size() < 2 or ckpt is None or not ckpt.by_epoch:
            return
        if ckpt.every_n_epochs(runner, ckpt.interval, ckpt.save_begin) or (
            ckpt.save_last and ckpt.is_last_train_epoch(runner)
        ):
            self.gather()

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        if self._states is not None:
            checkpoint["rng_state_per_rank"] = self._states
            self._states = None

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        world = get_world_size()
        if not getattr(runner, "_resume", False) or world < 2:
            return
        states = checkpoint.get("rng_state_per_rank")
        if states is None or len(states) != world:
            saved = "none" if states is None else f"{len(states)} processes"
            print_log(
                f"DistRNGStateHook: random states not restored (checkpoint: {saved}; this run: {world} processes); "
                "mmengine re-seeds every process, so the random stream differs from an uninterrupted run",
                logger="current",
                level=logging.WARNING,
            )
            return
        # applied in before_train: Runner.resume re-seeds after this hook when the config's seed differs (None)
        self._restore = states[get_rank()]

    def before_train(self, runner) -> None:
        if self._restore is not None:
            set_rng_state(self._restore)
            self._restore = None
            print_log(f"DistRNGStateHook: random states of all {get_world_size()} processes restored", logger="current")
