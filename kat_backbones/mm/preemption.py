"""Checkpoint and stop on a preemption signal: ``kat_backbones.PreemptionHook``.

Clusters announce preemption with a signal before they kill: Slurm sends SIGTERM (and SIGKILL ``KillWait`` seconds
later, 30 s by default), or SIGUSR1 with ``sbatch --signal=USR1@120`` (120 s before the end of the time limit);
torchrun forwards a SIGTERM it receives to its workers and kills them 30 s later. Without a handler Python dies at
once and everything since the last saving interval is lost.

With this hook every process of a run, on SIGTERM or SIGUSR1: finishes the iteration it is in, writes a checkpoint of
that iteration (through the run's :class:`~kat_backbones.mm.atomic_checkpoint.AtomicCheckpointHook`, so
``last_checkpoint`` names it), and raises :class:`PreemptedError`; ``tools/train.py`` then exits with status
:data:`PREEMPTED_EXIT_CODE` (75, ``EX_TEMPFAIL``: "try again"), which ``tools/slurm_train.sh`` turns into a requeue.
``tools/train.py CONFIG --resume`` continues from that checkpoint; an ``IterBasedTrainLoop`` (the detection and
segmentation recipes) continues exactly as if never stopped (tested).

The verdict is all-reduced after every iteration (one 1-element all-reduce), so all processes stop after the same
iteration even when only some received the signal. An ``EpochBasedTrainLoop`` stopped mid-epoch saves
``iter_N.pth``; mmengine restarts that epoch from its start on resume (not exact; ``RNGStateHook`` logs it); stopped
in the last iteration of an epoch, the hook lets the epoch end and saves the regular epoch checkpoint (exact).
"""

from __future__ import annotations

import logging
import signal
import threading
from typing import Any, Sequence

import torch
from mmengine.dist import all_reduce, barrier, get_world_size
from mmengine.hooks import Hook
from mmengine.logging import print_log
from mmengine.runner import EpochBasedTrainLoop

from .registry import HOOKS

__all__ = ["PREEMPTED_EXIT_CODE", "PreemptedError", "PreemptionHook"]

#: Exit status of ``tools/train.py`` after a preemption signal was handled (checkpoint written): sysexits.h
#: ``EX_TEMPFAIL``, "a temporary failure; the user is invited to retry". Distinct from a crash (1), a non-finite loss
#: (3) and a death by signal (128 + n).
PREEMPTED_EXIT_CODE = 75


class PreemptedError(RuntimeError):
    """Raised by :class:`PreemptionHook` once the checkpoint is written.

    Attributes:
        signum (int): The signal received (by this process; 0 when only another process received one).
        checkpoint (str | None): The checkpoint to resume from.
        iteration (int): Iterations completed.
    """

    def __init__(self, message: str, signum: int, checkpoint: str | None, iteration: int) -> None:
        super().__init__(message)
        self.signum = signum
        self.checkpoint = checkpoint
        self.iteration = iteration


@HOOKS.register_module()
class PreemptionHook(Hook):
    """On SIGTERM / SIGUSR1: finish the iteration, save a checkpoint, stop (``type='kat_backbones.PreemptionHook'``).

    The handlers are installed when training starts and the previous ones restored when it ends. They only set a
    flag; the work happens after the iteration (this hook runs last, after the checkpoint and logger hooks). See the
    module docstring for distributed runs and epoch-based loops.

    Args:
        signals (Sequence[str]): Signal names to handle. Defaults to ``('SIGTERM', 'SIGUSR1')``.
    """

    priority = "LOWEST"

    def __init__(self, signals: Sequence[str] = ("SIGTERM", "SIGUSR1")) -> None:
        self.signals = []
        for name in signals:
            if not isinstance(name, str) or not hasattr(signal, name):
                raise ValueError(f"PreemptionHook: signals must be signal names such as 'SIGTERM', got {name!r}")
            self.signals.append(getattr(signal, name))
        self.received = 0  # the signal this process received (0: none)
        self._previous: dict[int, Any] = {}

    # -- signal handling -------------------------------------------------------------------------------------------

    def _handler(self, signum: int, frame: Any) -> None:
        if not self.received:
            self.received = signum
            # print_log is not safe inside a signal handler (logging takes locks); the message comes at the next
            # iteration's end
        # a second signal is ignored: the checkpoint is under way

    def before_train(self, runner) -> None:
        self.received = 0
        if threading.current_thread() is not threading.main_thread():
            print_log("PreemptionHook: not in the main thread, signals not handled", logger="current", level=30)
            return
        for signum in self.signals:
            self._previous[signum] = signal.signal(signum, self._handler)

    def _restore(self) -> None:
        for signum, previous in self._previous.items():
            signal.signal(signum, previous if previous is not None else signal.SIG_DFL)
        self._previous.clear()

    def after_train(self, runner) -> None:
        self._restore()

    def __del__(self) -> None:  # a run that ended with an exception does not reach after_train
        try:
            self._restore()
        except Exception:  # noqa: BLE001  (interpreter shutdown)
            pass

    # -- stopping --------------------------------------------------------------------------------------------------

    def _stop_requested(self) -> bool:
        flag = self.received
        if get_world_size() > 1:
            t = torch.tensor([float(flag)])
            all_reduce(t, op="max")
            flag = int(t.item())
        return bool(flag)

    def after_train_iter(self, runner, batch_idx: int, data_batch: Any = None, outputs: Any = None) -> None:
        if not self._stop_requested():
            return
        loop = runner.train_loop
        if isinstance(loop, EpochBasedTrainLoop) and batch_idx + 1 == len(loop.dataloader):
            return  # the epoch ends now: after_train_epoch saves the regular epoch checkpoint
        self._save_and_stop(runner, iteration=runner.iter + 1)

    def after_train_epoch(self, runner) -> None:
        if self._stop_requested():
            self._save_and_stop(runner, iteration=runner.iter)

    def _save_and_stop(self, runner, iteration: int) -> None:
        from .atomic_checkpoint import AtomicCheckpointHook

        name = signal.Signals(self.received).name if self.received else "a signal in another process"
        if iteration >= runner.max_iters:  # the last iteration: the run ends normally (and saves as configured)
            print_log(f"PreemptionHook: {name} received in the last iteration; finishing", logger="current")
            return
        ckpt_hook = next((h for h in runner.hooks if isinstance(h, AtomicCheckpointHook)), None)
        if ckpt_hook is None:
            raise RuntimeError(
                "PreemptionHook needs kat_backbones.AtomicCheckpointHook as default_hooks.checkpoint "
                "(tools/train.py sets it up; see kat_backbones.mm.fault_tolerance)"
            )
        epoch_end = isinstance(runner.train_loop, EpochBasedTrainLoop) and iteration == runner.iter
        epochs_done = runner.epoch + 1 if epoch_end else runner.epoch
        if ckpt_hook.by_epoch and not epoch_end:  # mid-epoch with epoch checkpoints: an extra iter_N.pth
            filename, step = f"iter_{iteration}.pth", None
        else:  # the regular epoch_N.pth / iter_N.pth, in the max_keep_ckpts rotation
            step = epochs_done if ckpt_hook.by_epoch else iteration
            filename = ckpt_hook.filename_tmpl.format(step)
        path = ckpt_hook.file_backend.join_path(ckpt_hook.out_dir, filename)
        if ckpt_hook.last_ckpt != path:  # not saved yet by the checkpoint hook's interval
            from .dist_rng import DistRNGStateHook

            for hook in runner.hooks:  # every process's random state into this checkpoint too (a collective)
                if isinstance(hook, DistRNGStateHook) and get_world_size() > 1:
                    hook.gather()
            meta = dict(epoch=epochs_done, iter=iteration)
            if step is None:
                ckpt_hook.save_checkpoint_as(runner, filename, meta, by_epoch=False)
            else:
                ckpt_hook._save_checkpoint_with_step(runner, step, meta)
        if get_world_size() > 1:  # nobody exits (and gets the job step killed) before the checkpoint is on disk
            barrier()
        message = (
            f"PreemptionHook: {name} received; stopped after iteration {iteration} and saved {path}. Continue with "
            f"`tools/train.py CONFIG --resume` (exit status {PREEMPTED_EXIT_CODE})"
        )
        print_log(message, logger="current", level=logging.WARNING)
        self._restore()
        raise PreemptedError(message, self.received, path, iteration)
