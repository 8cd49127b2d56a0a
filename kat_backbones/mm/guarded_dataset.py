"""A dataset wrapper for long runs: ``kat_backbones.GuardedDataset``.

It forwards everything to the wrapped dataset (length, ``metainfo``, ``get_data_info``, any attribute) and adds two
things to ``__getitem__``:

- **workers die with their parent**: the first sample a data-loader worker process loads arms
  :func:`~kat_backbones.mm.parent_death.die_with_parent`, so no worker outlives a killed, crashed or preempted
  training process (a worker gets its first indices as soon as the loader starts, so it is armed at once). The
  worker also leaves SIGTERM and SIGUSR1 from anyone but its parent to the parent
  (:func:`~kat_backbones.mm.parent_death.leave_stop_signals_to_parent`): Slurm signals every process of a job step,
  and a worker dying on it would make PyTorch raise "DataLoader worker exited unexpectedly" in the training process
  while :class:`~kat_backbones.mm.preemption.PreemptionHook` finishes the iteration and saves. The parent stops its
  workers itself (multiprocessing's ``terminate()``, a SIGTERM from the parent, is obeyed) or, killed, takes them
  along;
- **a sample that fails to load names its file**: any exception of the wrapped dataset (mmcv's
  ``cv2.error ... !buf.empty()`` for a zero-byte image, PIL's truncated-file error, a missing annotation file) is
  re-raised as :class:`SampleLoadError` with the sample index and the data info's file paths (``img_path``,
  ``seg_map_path``, ...), the original exception chained. Inside a worker PyTorch re-raises it in the main process
  with the worker's traceback.

``tools/train.py`` and ``tools/test.py`` wrap the datasets of every data loader in it
(:mod:`kat_backbones.mm.fault_tolerance`); in a config::

    train_dataloader = dict(dataset=dict(type='kat_backbones.GuardedDataset', dataset=dict(type='CocoDataset', ...)))
"""

from __future__ import annotations

import os
from typing import Any

from torch.utils.data import Dataset, get_worker_info

from .parent_death import die_with_parent, leave_stop_signals_to_parent
from .registry import DATASETS

__all__ = ["GuardedDataset", "SampleLoadError"]


class SampleLoadError(OSError):
    """A sample could not be loaded; the message names the file(s) and the index. (One message argument, so
    PyTorch's data loader can re-raise it from a worker.)"""


def _files_of(info: Any) -> list[str]:
    if not isinstance(info, dict):
        return []
    keys = [k for k in info if k.endswith(("_path", "file_name", "filename")) and isinstance(info[k], str)]
    return [f"{k}={info[k]}" for k in keys]


@DATASETS.register_module()
class GuardedDataset(Dataset):
    """Wraps a dataset (a config dict or an instance); see the module docstring.

    Args:
        dataset (dict | Dataset): The dataset, or its config (built in the current registry scope).
        die_with_parent (bool): Arm :func:`~kat_backbones.mm.parent_death.die_with_parent` in workers. Defaults to
            True.
    """

    def __init__(self, dataset: dict | Dataset, die_with_parent: bool = True) -> None:
        self.dataset = DATASETS.build(dataset) if isinstance(dataset, dict) else dataset
        self.die_with_parent = die_with_parent
        self._owner_pid = os.getpid()  # the process that builds the loader: the workers' parent
        self._armed_pid: int | None = None

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") or "dataset" not in self.__dict__:  # pickling, or not built yet
            raise AttributeError(name)
        return getattr(self.__dict__["dataset"], name)

    def __len__(self) -> int:
        return len(self.dataset)

    @property
    def metainfo(self) -> dict:
        return self.dataset.metainfo

    def full_init(self) -> None:
        if hasattr(self.dataset, "full_init"):
            self.dataset.full_init()

    def _describe(self, idx: int) -> str:
        where = f"sample {idx} of {type(self.dataset).__name__}"
        try:
            files = _files_of(self.dataset.get_data_info(idx))
        except Exception:  # noqa: BLE001  (the info itself may be what fails)
            files = []
        return f"{where} ({', '.join(files)})" if files else where

    def __getitem__(self, idx: int) -> Any:
        if self.die_with_parent and self._armed_pid != os.getpid() and get_worker_info() is not None:
            die_with_parent(self._owner_pid)
            leave_stop_signals_to_parent(self._owner_pid)
            self._armed_pid = os.getpid()
        try:
            return self.dataset[idx]
        except SampleLoadError:
            raise
        except Exception as err:
            raise SampleLoadError(f"cannot load {self._describe(idx)}: {type(err).__name__}: {err}") from err

    def __repr__(self) -> str:
        return f"GuardedDataset({self.dataset!r})"
