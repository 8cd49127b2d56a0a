"""Resuming the right checkpoint and saying what a resume keeps: :func:`find_resume_checkpoint` and
``kat_backbones.ResumeCheckHook``.

mmengine's ``--resume`` reads the absolute path stored in ``WORK_DIR/last_checkpoint``: a work dir moved or copied
elsewhere resumes from the old location's file (or fails when it is gone). :func:`find_resume_checkpoint` takes the
checkpoint of that name inside the work dir being resumed.

A resume restores weights, optimizer, schedulers and counters from the checkpoint, so some settings of the current
config are silently overridden and others silently change the run. :class:`ResumeCheckHook` compares the
checkpoint's config (mmengine stores it in ``meta['cfg']``) with the current one and logs, for each training field
that differs, both values and which one the resumed run uses:

- the checkpoint's: the optimizer's hyper-parameters (``optim_wrapper.optimizer.*``, ``paramwise_cfg``: the param
  groups, learning rates included, are restored) and ``param_scheduler`` (each scheduler's state, its begin/end/
  factors included, is restored); ``randomness.seed`` (mmengine takes the checkpoint's);
- the current config's: ``train_cfg`` (``max_iters``/``max_epochs``, ``val_interval``), the batch size, gradient
  clipping and other optimizer-wrapper settings, ``auto_scale_lr``.

To train on with another learning rate or schedule, start a new run from the weights instead of resuming:
``--cfg-options load_from=CHECKPOINT`` (fresh optimizer and schedule). A checkpoint at or past the configured end
(a finished run resumed, or ``max_iters`` lowered below it) is reported: nothing is left to train.
"""

from __future__ import annotations

import glob
import logging
import os.path as osp
from typing import Any

from mmengine.config import Config
from mmengine.hooks import Hook
from mmengine.logging import print_log
from mmengine.runner import EpochBasedTrainLoop

from .registry import HOOKS

__all__ = ["ResumeCheckHook", "config_differences", "find_resume_checkpoint", "use_checkpoint_seed"]

#: (prefix of a dotted config key, which value a resumed run uses, why). First match wins.
_RULES: tuple[tuple[str, str, str], ...] = (
    ("optim_wrapper.optimizer.", "checkpoint", "restored with the optimizer state"),
    ("optim_wrapper.paramwise_cfg", "checkpoint", "the param groups are restored with the optimizer state"),
    ("optim_wrapper.constructor", "checkpoint", "the param groups are restored with the optimizer state"),
    ("optim_wrapper.", "config", "not part of the optimizer state"),
    ("param_scheduler", "checkpoint", "the schedulers' state is restored"),
    ("randomness.seed", "checkpoint", "mmengine re-seeds with the checkpoint's seed"),
    ("train_cfg.", "config", "the loop is built from the config"),
    ("train_dataloader.batch_size", "config", "the loader is built from the config"),
    ("auto_scale_lr", "config", "applied when the optimizer is built, before its state is restored"),
)


def find_resume_checkpoint(work_dir: str) -> str | None:
    """The checkpoint ``--resume`` should continue from.

    ``last_checkpoint`` names it; when that path is elsewhere (the work dir was moved or copied) the file of the same
    name in ``work_dir`` is used if there is one, else the recorded path (checkpoints saved to another ``out_dir``).
    Without ``last_checkpoint``, or when its file is gone, the newest ``*.pth`` of ``work_dir`` (by modification time;
    checkpoints are only ever complete under their final name) is used.
    :class:`ResumeCheckHook` logs such a substitution in the run's log.

    Returns:
        str | None: A path in ``work_dir``, or None when it holds no checkpoint.
    """
    work_dir = osp.abspath(work_dir)
    recorded = _recorded_checkpoint(work_dir)
    if recorded is not None:
        local = osp.join(work_dir, osp.basename(recorded))
        if osp.isfile(local):
            return local
        if osp.isfile(recorded) or "://" in recorded:  # CheckpointHook(out_dir=...) elsewhere, or remote storage
            return recorded
    candidates = sorted(glob.glob(osp.join(glob.escape(work_dir), "*.pth")), key=osp.getmtime)
    if not candidates and recorded is not None:
        print_log(
            f"resume: last_checkpoint names {recorded}, which is not in {work_dir}, and the work dir has no "
            "checkpoint: starting from scratch",
            logger="current",
            level=logging.WARNING,
        )
    return candidates[-1] if candidates else None


def use_checkpoint_seed(cfg: Any, checkpoint: str) -> str | None:
    """Sets ``cfg.randomness.seed`` to the seed the checkpoint's run used, when the config leaves it unset.

    Without a seed mmengine draws a new one for every run, builds the data loaders (whose workers are seeded from
    it) before resuming, and only then re-seeds with the checkpoint's seed: the resumed run's augmentations and the
    random state restored by ``RNGStateHook`` are lost. Seeding the config up front makes the resumed run draw what
    the uninterrupted one would have. The file is opened memory-mapped (only the metadata is read).

    Returns:
        str | None: A log line when the config was changed.
    """
    randomness = cfg.get("randomness") or {}
    if randomness.get("seed") is not None:
        return None
    from kat_backbones.checkpoint import read_checkpoint

    from .checkpoint import allow_mmengine_checkpoints

    allow_mmengine_checkpoints()
    try:
        seed = read_checkpoint(checkpoint, mmap=True).get("meta", {}).get("seed")
    except Exception:  # noqa: BLE001  (unreadable here: Runner.resume reports it properly)
        return None
    if seed is None:
        return None
    cfg.randomness = dict(randomness, seed=int(seed))
    return f"resume: randomness.seed = {seed} (the seed of {checkpoint}'s run; the config leaves it unset)"


def _recorded_checkpoint(work_dir: str) -> str | None:
    record = osp.join(work_dir, "last_checkpoint")
    if not osp.isfile(record):
        return None
    with open(record) as f:
        return f.read().strip() or None


def _flatten(value: Any, prefix: str, out: dict[str, Any]) -> None:
    if isinstance(value, dict):
        for k, v in value.items():
            _flatten(v, f"{prefix}.{k}" if prefix else str(k), out)
    elif isinstance(value, (list, tuple)) and any(isinstance(v, dict) for v in value):
        out[f"{prefix}.len"] = len(value)
        for i, v in enumerate(value):
            _flatten(v, f"{prefix}.{i}", out)
    else:
        out[prefix] = value


def config_differences(old: Config | dict, new: Config | dict) -> list[tuple[str, Any, Any, str, str]]:
    """The training fields (see the module docstring) that differ between two configs.

    Returns:
        list[tuple]: ``(key, checkpoint value, current value, winner ('checkpoint' or 'config'), reason)``; a value
        absent from one config is ``'<unset>'``.
    """
    a: dict[str, Any] = {}
    b: dict[str, Any] = {}
    for top in ("optim_wrapper", "param_scheduler", "randomness", "train_cfg", "auto_scale_lr"):
        _flatten(old.get(top), top, a)
        _flatten(new.get(top), top, b)
    for cfg, flat in ((old, a), (new, b)):
        flat["train_dataloader.batch_size"] = (cfg.get("train_dataloader") or {}).get("batch_size")
    out = []
    for key in sorted(set(a) | set(b)):
        va, vb = a.get(key, "<unset>"), b.get(key, "<unset>")
        if va == vb:
            continue
        rule = next((r for r in _RULES if key.startswith(r[0])), None)
        if rule is not None:
            out.append((key, va, vb, rule[1], rule[2]))
    return out


@HOOKS.register_module()
class ResumeCheckHook(Hook):
    """On ``--resume``: logs the differing training fields and which value wins; reports a finished run
    (``type='kat_backbones.ResumeCheckHook'``). See the module docstring."""

    priority = "VERY_HIGH"

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        if not getattr(runner, "_resume", False):
            return
        recorded, chosen = _recorded_checkpoint(runner.work_dir), getattr(runner, "_load_from", None)
        if recorded and isinstance(chosen, str) and osp.abspath(recorded) != osp.abspath(chosen):
            gone = "" if osp.isfile(recorded) else ", which does not exist"
            print_log(
                f"resume: last_checkpoint names {recorded}{gone}; resuming from {chosen} in this work dir "
                f"{runner.work_dir} (moved or copied?)",
                logger="current",
                level=logging.WARNING,
            )
        meta = checkpoint.get("meta", {})
        text = meta.get("cfg")
        if isinstance(text, str):
            try:
                old = Config.fromstring(text, file_format=".py")
            except Exception as err:  # noqa: BLE001  (a config that no longer parses: say so, don't stop)
                print_log(f"resume: could not read the checkpoint's config ({err}); not compared", logger="current")
            else:
                for key, then, now, winner, why in config_differences(old, runner.cfg):
                    used = then if winner == "checkpoint" else now
                    hint = (
                        "; to train with the new value start a new run with load_from=CHECKPOINT instead of --resume"
                        if winner == "checkpoint"
                        else ""
                    )
                    print_log(
                        f"resume: {key} differs: checkpoint {then!r}, config {now!r} -> the {winner}'s value {used!r} "
                        f"is used ({why}){hint}",
                        logger="current",
                        level=logging.WARNING,
                    )
        loop = runner.train_loop
        done_iters, done_epochs = meta.get("iter", 0), meta.get("epoch", 0)
        if isinstance(loop, EpochBasedTrainLoop):
            finished, where = done_epochs >= loop.max_epochs, f"epoch {done_epochs} of max_epochs={loop.max_epochs}"
        else:
            finished, where = done_iters >= loop.max_iters, f"iteration {done_iters} of max_iters={loop.max_iters}"
        if finished:
            print_log(
                f"resume: the checkpoint is at {where}: this run is already finished, nothing is left to train "
                "(raise train_cfg.max_iters / max_epochs to train longer)",
                logger="current",
                level=logging.WARNING,
            )
