"""The fault-tolerance setup of ``tools/train.py`` and ``tools/test.py`` as config edits: :func:`add_fault_tolerance`.

What it turns on (docs/reliability.md lists each fault, its outcome and its test):

========================================  ==========================================================================
``kat_backbones.AtomicCheckpointHook``    replaces ``default_hooks.checkpoint``'s ``CheckpointHook``: a kill while
                                          saving never loses the last good checkpoint
``kat_backbones.PreemptionHook``          SIGTERM / SIGUSR1: finish the iteration, checkpoint, exit status 75
``kat_backbones.WorkDirLockHook``         one training run per work dir
``kat_backbones.ResumeCheckHook``         ``--resume``: which changed training fields win; a finished run says so
``kat_backbones.DistRNGStateHook``        every process's random state in checkpoints of distributed runs
``kat_backbones.CheckpointFitHook``       a checkpoint that does not fit the model is refused (train and test)
``kat_backbones.GuardedDataset``          wraps every loader's dataset: workers die with their parent, a sample
                                          that fails to load names its file and index
:func:`~.width_check.check_widths`        neck/head widths against the KAT backbone, before anything is built
========================================  ==========================================================================

Every piece is an ordinary hook or dataset of the ``kat_backbones`` scope and can be written into a config by hand.
"""

from __future__ import annotations

from typing import Any

from .width_check import check_widths

__all__ = ["add_fault_tolerance", "close_run", "inner_dataset_cfg"]

_CHECKPOINT_HOOKS = ("CheckpointHook", "mmengine.CheckpointHook")


def _short(name: Any) -> str:
    return str(name).rsplit(".", 1)[-1]


def add_fault_tolerance(cfg: Any, training: bool = True, allow_partial_load: bool = False) -> list[str]:
    """Edits ``cfg`` in place (see the module docstring).

    Args:
        cfg (mmengine.Config): A train / test config.
        training (bool): A training run (checkpoint, preemption, lock and resume hooks). Defaults to True.
        allow_partial_load (bool): Let ``CheckpointFitHook`` only log a checkpoint that does not fill the model.
            Defaults to False.

    Returns:
        list[str]: One line per change, for the log.

    Raises:
        ValueError: The neck or heads disagree with the backbone width.
    """
    check_widths(cfg.get("model"))
    changes: list[str] = []
    hooks = list(cfg.get("custom_hooks") or [])
    present = {_short(h.get("type")) for h in hooks if isinstance(h, dict)}

    def add(name: str, **kwargs: Any) -> None:
        if name not in present:
            hooks.append(dict(type=f"kat_backbones.{name}", **kwargs))
            changes.append(f"custom_hooks: + kat_backbones.{name}" + (f" {kwargs}" if kwargs else ""))

    if training:
        ckpt = (cfg.get("default_hooks") or {}).get("checkpoint")
        atomic = isinstance(ckpt, dict) and _short(ckpt.get("type")) == "AtomicCheckpointHook"
        if isinstance(ckpt, dict) and ckpt.get("type") in _CHECKPOINT_HOOKS:
            ckpt["type"] = "kat_backbones.AtomicCheckpointHook"
            changes.append("default_hooks.checkpoint: CheckpointHook -> kat_backbones.AtomicCheckpointHook")
            atomic = True
        if atomic:
            add("PreemptionHook")
        else:
            changes.append(f"no PreemptionHook: default_hooks.checkpoint is {ckpt!r}, not a CheckpointHook")
        add("WorkDirLockHook")
        add("ResumeCheckHook")
        add("DistRNGStateHook")
    add("CheckpointFitHook", **({"allow_partial": True} if allow_partial_load else {}))
    cfg.custom_hooks = hooks

    for name in ("train_dataloader", "val_dataloader", "test_dataloader"):
        loader = cfg.get(name)
        dataset = loader.get("dataset") if isinstance(loader, dict) else None
        if isinstance(dataset, dict) and _short(dataset.get("type")) != "GuardedDataset":
            loader["dataset"] = dict(type="kat_backbones.GuardedDataset", dataset=dataset)
            changes.append(f"{name}.dataset: wrapped in kat_backbones.GuardedDataset")
    return changes


def inner_dataset_cfg(dataset_cfg: Any) -> Any:
    """The dataset config a ``kat_backbones.GuardedDataset`` wraps (as is for any other dataset config).

    The config a training run dumps into its work dir holds the wrapped loaders; tools that read a dataset's
    ``pipeline`` or ``metainfo`` from such a config look through the wrapper with this.
    """
    while isinstance(dataset_cfg, dict) and _short(dataset_cfg.get("type")) == "GuardedDataset":
        dataset_cfg = dataset_cfg["dataset"]
    return dataset_cfg


def close_run(runner: Any) -> None:
    """Releases what a run holds when it ends with an exception (the work-dir lock, the signal handlers); a normal
    end releases them in ``after_run`` / ``after_train``. Safe to call twice."""
    for hook in getattr(runner, "hooks", []):
        for method in ("release", "_restore"):
            if callable(getattr(hook, method, None)) and type(hook).__module__.startswith("kat_backbones."):
                getattr(hook, method)()
