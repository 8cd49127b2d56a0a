"""Training hooks for reliable runs: stop on a non-finite loss (AMP-aware), resume with the random state of the
interrupted run.

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
    """Stops training on a NaN or infinite loss (``type='kat_backbones.NonFiniteLossHook'``), tolerating the
    occasional overflow of fp16 training with a dynamic loss scaler.

    After each training iteration the log variables returned by ``train_step`` (``loss``, ``loss_cls``, ...) are
    checked. What happens on a non-finite value depends on the optimizer wrapper:

    - **no dynamic loss scaler** (fp32 ``OptimWrapper``, or an ``AmpOptimWrapper`` whose ``GradScaler`` is disabled
      or static): the optimizer has already applied the non-finite gradients, so the hook logs
      ``non-finite loss <name>=<value> at iteration N`` as an error and raises :class:`NonFiniteLossError` at once
      (``tools/train.py`` then exits with status 3). It runs before the checkpoint, EMA and logger hooks, so the
      weights of that iteration are never saved: the latest checkpoint stays a good one to resume from.
    - **fp16 with a dynamic loss scaler** (``AmpOptimWrapper(loss_scale='dynamic')``, or a dict without fixed
      factors): the scaler saw the non-finite gradients, skipped the optimizer step and lowered the scale, as it
      does for every fp16 overflow, so the weights are intact. The hook logs a warning with the loss scale and the
      counts, keeps the run's total in the message hub (runtime info ``nonfinite_loss_iters``, saved with
      checkpoints), and carries on. It stops
      (same error and exit status) only when ``max_consecutive`` iterations in a row had a non-finite loss (the
      forward pass itself overflows, whatever the scale), or when the loss scale fell below ``min_loss_scale``
      (gradients overflow even unscaled: the run is diverging). The scale is checked every iteration, since
      gradient overflows skip steps without making the loss non-finite.

    In distributed runs the verdict is all-reduced, so every process counts, skips and stops at the same iteration.

    Args:
        keys (Sequence[str], optional): Log variables to check. Defaults to None: every variable whose name contains
            ``'loss'`` (the ones mmengine sums into the loss).
        max_consecutive (int): With a dynamic loss scaler, stop after this many consecutive iterations with a
            non-finite loss. Defaults to 10: a scale overflow resolves in one step (the scaler halves the scale and
            the next batch runs at half the scale), so ten in a row means the forward pass itself produces inf/NaN.
        min_loss_scale (float): With a dynamic loss scaler, stop when the scale drops below this. Defaults to 1e-4
            (fairseq's ``--min-loss-scale`` default): from torch's initial 2**16 that is 30 halvings with no
            recovery in between.
    """

    priority = "VERY_HIGH"

    def __init__(
        self, keys: Sequence[str] | None = None, max_consecutive: int = 10, min_loss_scale: float = 1e-4
    ) -> None:
        if int(max_consecutive) != max_consecutive or max_consecutive < 1:
            raise ValueError(f"max_consecutive must be an integer >= 1, got {max_consecutive!r}")
        if not min_loss_scale >= 0:
            raise ValueError(f"min_loss_scale must be >= 0, got {min_loss_scale!r}")
        self.keys = None if keys is None else tuple(keys)
        self.max_consecutive = int(max_consecutive)
        self.min_loss_scale = float(min_loss_scale)
        self.consecutive = 0  #: non-finite iterations in a row (dynamic loss scaling only)
        self.total = 0  #: non-finite iterations of this run so far (dynamic loss scaling only)

    def _checked(self, name: str) -> bool:
        return "loss" in name if self.keys is None else name in self.keys

    @staticmethod
    def dynamic_loss_scaler(runner) -> Any | None:
        """The enabled dynamic ``GradScaler`` of ``runner.optim_wrapper`` (mmengine's ``AmpOptimWrapper``: the
        ``loss_scaler`` attribute; one of an ``OptimWrapperDict``'s wrappers), or None for fp32, bf16 without a
        scaler, and static loss scales."""
        wrapper = getattr(runner, "optim_wrapper", None)
        wrappers = list(wrapper.values()) if hasattr(wrapper, "values") else [wrapper]
        for w in wrappers:
            scaler = getattr(w, "loss_scaler", None)
            if scaler is None or not scaler.is_enabled():
                continue
            # mmengine's float loss_scale keeps the scale fixed through update(new_scale); a dict may set the factors
            if getattr(w, "_scale_update_param", None) is None and scaler.get_backoff_factor() < 1.0:
                return scaler
        return None

    def _stop(self, message: str, iteration: int, bad: dict[str, float]) -> None:
        print_log(message, logger="current", level=logging.ERROR)
        raise NonFiniteLossError(message, iteration, bad)

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

        iteration = runner.iter + 1
        where = f"at iteration {iteration}"
        if isinstance(runner.train_loop, EpochBasedTrainLoop):
            where += f" (epoch {runner.epoch + 1}, batch {batch_idx + 1})"
        if bad:
            message = "non-finite loss " + ", ".join(f"{name}={value}" for name, value in bad.items()) + f" {where}"
        else:
            message = f"non-finite loss in another process {where}"
        resume_hint = (
            "Resume from the last checkpoint (tools/train.py CONFIG --resume) with a lower learning rate, gradient "
            "clipping (optim_wrapper.clip_grad) or without mixed precision."
        )

        scaler = self.dynamic_loss_scaler(runner)
        if scaler is None:
            if any_bad:
                self._stop(
                    f"{message}; training stopped, the weights of this iteration were not saved. {resume_hint}",
                    iteration,
                    bad,
                )
            return

        scale = float(scaler.get_scale())  # after this iteration's update()
        if any_bad:
            self.consecutive += 1
            self.total += 1
        else:
            self.consecutive = 0
        message_hub = getattr(runner, "message_hub", None)
        if message_hub is not None and any_bad:
            message_hub.update_info("nonfinite_loss_iters", self.total)
        if any_bad and self.consecutive >= self.max_consecutive:
            self._stop(
                f"{message}: {self.consecutive} consecutive iterations with a non-finite loss (max_consecutive="
                f"{self.max_consecutive}, loss scale {scale:g}); training stopped. The fp16 forward pass overflows "
                f"whatever the loss scale; the weights are those of the last finite step. {resume_hint}",
                iteration,
                bad,
            )
        if scale < self.min_loss_scale:
            self._stop(
                f"loss scale collapsed to {scale:g} (< min_loss_scale={self.min_loss_scale:g}) {where}: gradients "
                f"overflow even unscaled, the run is diverging; training stopped. {resume_hint}",
                iteration,
                bad,
            )
        if any_bad:
            print_log(
                f"{message}: fp16 overflow, the dynamic loss scaler skipped this step (loss scale now {scale:g}); "
                f"{self.consecutive} in a row, {self.total} in this run (stops at {self.max_consecutive} in a row "
                f"or a scale below {self.min_loss_scale:g})",
                logger="current",
                level=logging.WARNING,
            )


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
