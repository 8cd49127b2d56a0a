"""Training hooks for reliable runs: stop on a non-finite loss, resume with the random state of the interrupted run.

Both are registered in the ``kat_backbones`` scope and added to every run by ``tools/train.py`` (see
:func:`add_reliability_hooks`; ``--no-reliability-hooks`` turns that off)::

    custom_hooks = [dict(type='kat_backbones.NonFiniteLossHook'), dict(type='kat_backbones.RNGStateHook')]
"""

from __future__ import annotations

import logging
import random
from typing import Any, Sequence

import numpy as np
import torch
from mmengine.dist import all_reduce, get_world_size
from mmengine.hooks import Hook
from mmengine.logging import print_log
from mmengine.runner import EpochBasedTrainLoop, IterBasedTrainLoop

from .registry import HOOKS

__all__ = [
    "NONFINITE_LOSS_EXIT_CODE",
    "NonFiniteLossError",
    "NonFiniteLossHook",
    "RNGStateHook",
    "add_reliability_hooks",
    "get_rng_state",
    "set_rng_state",
]

#: Exit status of ``tools/train.py`` when :class:`NonFiniteLossHook` stops a run.
NONFINITE_LOSS_EXIT_CODE = 3


class NonFiniteLossError(FloatingPointError):
    """Raised by :class:`NonFiniteLossHook`.

    Attributes:
        iteration (int): The 1-based training iteration (as in the log's ``Iter(train) [N/...]``).
        values (dict[str, float]): The non-finite log variables of this process (empty when another process had them).
    """

    def __init__(self, message: str, iteration: int, values: dict[str, float]) -> None:
        super().__init__(message)
        self.iteration = iteration
        self.values = values


@HOOKS.register_module()
class NonFiniteLossHook(Hook):
    """Stops training at the first iteration whose loss is NaN or infinite (``type='kat_backbones.NonFiniteLossHook'``).

    After each training iteration the log variables returned by ``train_step`` (``loss``, ``loss_cls``, ...) are
    checked; on a non-finite value it logs ``non-finite loss <name>=<value> at iteration N`` as an error and raises
    :class:`NonFiniteLossError` (``tools/train.py`` then exits with status 3). It runs before the checkpoint, EMA and
    logger hooks, so the weights of that iteration (already updated with the non-finite gradients) are not saved:
    the latest checkpoint stays a good one to resume from. In distributed runs the verdict is all-reduced, so every
    process stops at the same iteration instead of waiting for the stopped one.

    Args:
        keys (Sequence[str], optional): Log variables to check. Defaults to None: every variable whose name contains
            ``'loss'`` (the ones mmengine sums into the loss).
    """

    priority = "VERY_HIGH"

    def __init__(self, keys: Sequence[str] | None = None) -> None:
        self.keys = None if keys is None else tuple(keys)

    def _checked(self, name: str) -> bool:
        return "loss" in name if self.keys is None else name in self.keys

    def after_train_iter(self, runner, batch_idx: int, data_batch: Any = None, outputs: Any = None) -> None:
        bad: dict[str, float] = {}
        for name, value in (outputs or {}).items():
            if not self._checked(name) or not isinstance(value, (torch.Tensor, float, int)):
                continue
            value = torch.as_tensor(value).detach()
            if not bool(torch.isfinite(value).all()):
                bad[name] = float(value.float().mean()) if value.numel() else float("nan")
        any_bad = bool(bad)
        if get_world_size() > 1:
            flag = torch.tensor([float(any_bad)])
            all_reduce(flag, op="max")
            any_bad = bool(flag.item() > 0)
        if not any_bad:
            return

        iteration = runner.iter + 1
        where = f"at iteration {iteration}"
        if isinstance(runner.train_loop, EpochBasedTrainLoop):
            where += f" (epoch {runner.epoch + 1}, batch {batch_idx + 1})"
        if bad:
            values = ", ".join(f"{name}={value}" for name, value in bad.items())
            message = f"non-finite loss {values} {where}"
        else:
            message = f"non-finite loss in another process {where}"
        message += (
            "; training stopped, the weights of this iteration were not saved. Resume from the last checkpoint "
            "(tools/train.py CONFIG --resume) with a lower learning rate, gradient clipping (optim_wrapper.clip_grad) "
            "or without mixed precision."
        )
        print_log(message, logger="current", level=logging.ERROR)
        raise NonFiniteLossError(message, iteration, bad)


def get_rng_state() -> dict[str, Any]:
    """The states of Python's, numpy's and torch's global random generators (CUDA too when initialised), as plain
    Python types and tensors (loadable with ``weights_only=True``)."""
    np_state = np.random.get_state(legacy=False)
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": {
            "bit_generator": np_state["bit_generator"],
            "key": np_state["state"]["key"].tolist(),
            "pos": int(np_state["state"]["pos"]),
            "has_gauss": int(np_state["has_gauss"]),
            "gauss": float(np_state["gauss"]),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restores the generators from :func:`get_rng_state`."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    np_state = state["numpy"]
    np.random.set_state(
        dict(
            bit_generator=np_state["bit_generator"],
            state=dict(key=np.asarray(np_state["key"], dtype=np.uint32), pos=np_state["pos"]),
            has_gauss=np_state["has_gauss"],
            gauss=np_state["gauss"],
        )
    )
    torch.set_rng_state(state["torch"])
    cuda = state.get("cuda")
    if cuda is not None and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)


@HOOKS.register_module()
class RNGStateHook(Hook):
    """Saves the global random states in checkpoints and restores them on resume
    (``type='kat_backbones.RNGStateHook'``).

    mmengine restores weights, optimizer, schedulers, message hub and the epoch/iteration counters on ``resume``, but
    re-seeds the random generators, so random augmentations (RandAugment, random erasing, mixup/cutmix) and stochastic
    depth after a resume differ from an uninterrupted run. With this hook, a single-process run with
    ``EpochBasedTrainLoop`` and checkpoints at epoch ends (the sampler of each epoch is seeded by ``seed + epoch``)
    resumes bit-exactly: same batches, same augmentations, same weights (tested in tests/test_reliability.py).

    It also keeps validation from consuming the training run's random numbers (the states are saved before a
    validation run and restored after it), so the random stream of training does not depend on where the validation
    runs fall, and a checkpoint taken before a validation resumes like the uninterrupted run.

    Limits (logged when they apply): ``IterBasedTrainLoop`` replays the skipped batches through the data pipeline on
    resume, which draws random numbers, so random augmentations after a resume differ (data order and model
    randomness follow the restored state); ``EpochBasedTrainLoop`` restarts an epoch from its start when the
    checkpoint was taken mid-epoch; in distributed runs each process has its own stream and the states are not
    saved (mmengine re-seeds as usual).

    Checkpoint key: ``rng_state`` (a dict of plain Python types and tensors).
    """

    priority = "VERY_LOW"

    def __init__(self) -> None:
        self._train_state: dict[str, Any] | None = None  # the training run's state while a validation runs

    def before_val(self, runner) -> None:
        self._train_state = get_rng_state()

    def after_val(self, runner) -> None:
        if self._train_state is not None:
            set_rng_state(self._train_state)
            self._train_state = None

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        if get_world_size() > 1:
            return
        checkpoint["rng_state"] = self._train_state if self._train_state is not None else get_rng_state()

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        if not getattr(runner, "_resume", False):
            return  # load_from (fine-tuning, testing): a fresh run keeps its own seed
        state = checkpoint.get("rng_state")
        if get_world_size() > 1 or state is None:
            reason = "distributed run" if get_world_size() > 1 else "the checkpoint has no rng_state"
            print_log(f"RNGStateHook: random states not restored ({reason})", logger="current")
            return
        set_rng_state(state)
        meta = checkpoint.get("meta", {})
        loop = runner.train_loop
        if isinstance(loop, IterBasedTrainLoop) and meta.get("iter", 0) > 0:
            print_log(
                "RNGStateHook: random states restored; IterBasedTrainLoop replays the skipped batches through the "
                "data pipeline, so random augmentations from here on differ from an uninterrupted run",
                logger="current",
            )
        elif isinstance(loop, EpochBasedTrainLoop):
            per_epoch = len(loop.dataloader)
            if meta.get("iter") != meta.get("epoch", 0) * per_epoch:
                print_log(
                    f"RNGStateHook: the checkpoint was taken mid-epoch (iteration {meta.get('iter')}, "
                    f"{per_epoch} per epoch); EpochBasedTrainLoop restarts epoch {meta.get('epoch', 0) + 1} from its "
                    "start, so this resume is not exact (checkpoint at epoch ends for exact resumes)",
                    logger="current",
                    level=logging.WARNING,
                )
            else:
                print_log("RNGStateHook: random states restored", logger="current")


def _hook_types(hooks: Any) -> set[str]:
    return {str(h.get("type", "")).rsplit(".", 1)[-1] for h in hooks or [] if isinstance(h, dict)}


def add_reliability_hooks(cfg: Any) -> list[str]:
    """Adds :class:`NonFiniteLossHook` and :class:`RNGStateHook` to ``cfg.custom_hooks`` unless the config already
    has them (in place; used by ``tools/train.py``).

    Returns:
        list[str]: One line per added hook.
    """
    hooks = list(cfg.get("custom_hooks") or [])
    present = _hook_types(hooks)
    added = []
    for name in ("NonFiniteLossHook", "RNGStateHook"):
        if name not in present:
            hooks.append(dict(type=f"kat_backbones.{name}"))
            added.append(f"custom_hooks: + kat_backbones.{name}")
    cfg.custom_hooks = hooks
    return added
