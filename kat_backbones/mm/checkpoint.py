"""mmengine checkpoints under torch >= 2.6 (``torch.load(weights_only=True)``): the allow-list and the local loader.

Reading files is :mod:`kat_backbones.checkpoint`'s job; this module only makes mmengine's checkpoints readable there
and routes mmengine's own loading through it.

torch >= 2.6 loads with ``weights_only=True`` by default: only tensors, containers and allow-listed globals may be
unpickled. A checkpoint saved by mmengine 0.10.7's Runner also stores its message hub (loss histories as
:class:`mmengine.logging.HistoryBuffer` holding numpy arrays and scalars), so ``--resume`` and ``load_from`` fail on
it. This module allow-lists exactly the globals such a checkpoint references (found by saving real Runner
checkpoints of the classification, detection and segmentation demos and listing them with
``torch.serialization.get_unsafe_globals_in_checkpoint``)::

    mmengine.logging.history_buffer.HistoryBuffer
    numpy._core.multiarray._reconstruct, numpy.ndarray, numpy.dtype      (numpy arrays)
    numpy._core.multiarray.scalar                                       (numpy scalars)
    builtins.getattr                                                    (HistoryBuffer's statistics methods)

plus the ``numpy.core.multiarray`` spellings of numpy 1.x files and numpy's concrete dtype classes. ``getattr`` is
NOT allowed in general: the global named ``builtins.getattr`` resolves to :func:`history_buffer_getattr`, which
only returns the four statistics methods of ``HistoryBuffer`` that mmengine pickles (``min``, ``max``, ``current``,
``mean``). Nothing here loads with ``weights_only=False``.

Importing this module (``import kat_backbones`` does) calls :func:`install_safe_checkpoint_loading`: the allow-list,
and mmengine's loader for local files (``CheckpointLoader`` scheme ``''``, used by ``Runner.resume`` /
``load_checkpoint`` and by ``tools/test.py``) replaced by :func:`load_from_local_safe`, which reads through
:func:`kat_backbones.checkpoint.read_checkpoint` and so refuses a file that references anything else with
:class:`~kat_backbones.checkpoint.UnsafeCheckpointError` and reports a truncated file with
:class:`~kat_backbones.checkpoint.CorruptCheckpointError`.
"""

from __future__ import annotations

import os.path as osp
import pickle
from typing import Any, Callable

import torch

from kat_backbones.checkpoint import read_checkpoint

__all__ = [
    "allow_mmengine_checkpoints",
    "history_buffer_getattr",
    "install_safe_checkpoint_loading",
    "load_from_local_safe",
    "mmengine_safe_globals",
]

#: The statistics methods a pickled :class:`mmengine.logging.HistoryBuffer` refers to (``getattr(HistoryBuffer,
#: name)`` in the pickle: protocol-2 pickles spell nested names that way).
HISTORY_BUFFER_STATISTICS = ("min", "max", "current", "mean")


def history_buffer_getattr(obj: Any, name: str) -> Callable:
    """What the global ``builtins.getattr`` resolves to when loading with this allow-list.

    mmengine pickles ``HistoryBuffer._statistics_methods`` (``{'min': HistoryBuffer.min, ...}``); with pickle
    protocol 2 each method is written as ``getattr(HistoryBuffer, 'min')``. Exactly these are returned; any other
    ``getattr`` in a checkpoint is refused.

    Raises:
        pickle.UnpicklingError: For any other object or attribute.
    """
    from mmengine.logging import HistoryBuffer

    if obj is HistoryBuffer and name in HISTORY_BUFFER_STATISTICS:
        return getattr(HistoryBuffer, name)
    raise pickle.UnpicklingError(
        f"Unsupported global: GLOBAL builtins.getattr({obj!r}, {name!r}): only getattr(HistoryBuffer, name) for "
        f"name in {HISTORY_BUFFER_STATISTICS} is allowed"
    )


def mmengine_safe_globals() -> list[Any]:
    """The allow-list for mmengine checkpoints, in :func:`torch.serialization.add_safe_globals` form.

    Returns:
        list: Objects and ``(object, 'module.name')`` pairs.
    """
    import numpy as np
    from mmengine.logging import HistoryBuffer

    multiarray = np._core.multiarray if hasattr(np, "_core") else np.core.multiarray
    out: list[Any] = [HistoryBuffer, np.ndarray, np.dtype, (history_buffer_getattr, "builtins.getattr")]
    for module in ("numpy._core.multiarray", "numpy.core.multiarray"):  # files written by numpy 2.x / 1.x
        out += [(multiarray._reconstruct, f"{module}._reconstruct"), (multiarray.scalar, f"{module}.scalar")]
    dtypes = getattr(np, "dtypes", None)  # numpy >= 1.25: the concrete dtype classes (numpy.dtypes.Float64DType ...)
    if dtypes is not None:
        for name in (
            "BoolDType", "Int8DType", "Int16DType", "Int32DType", "Int64DType", "UInt8DType", "UInt16DType",
            "UInt32DType", "UInt64DType", "Float16DType", "Float32DType", "Float64DType", "LongDType", "ULongDType",
        ):
            if hasattr(dtypes, name):
                out.append(getattr(dtypes, name))
    return out


def allow_mmengine_checkpoints() -> None:
    """Adds :func:`mmengine_safe_globals` to torch's weights-only allow-list (idempotent)."""
    torch.serialization.add_safe_globals(mmengine_safe_globals())


def load_from_local_safe(filename: str, map_location: Any = None) -> Any:
    """mmengine's local-file checkpoint loader (``CheckpointLoader`` scheme ``''``), through
    :func:`kat_backbones.checkpoint.read_checkpoint`.

    Same behaviour as ``mmengine.runner.checkpoint.load_from_local`` on torch >= 2.6 (``weights_only=True``), plus the
    mmengine allow-list (re-applied, in case the allow-list was cleared since import) and the errors of
    :func:`~kat_backbones.checkpoint.read_checkpoint`.
    """
    filename = osp.expanduser(filename)
    if not osp.isfile(filename):
        raise FileNotFoundError(f"{filename} can not be found.")
    allow_mmengine_checkpoints()
    return read_checkpoint(filename, map_location=map_location)


def install_safe_checkpoint_loading() -> None:
    """Allow-lists the mmengine globals and makes mmengine load local checkpoints with
    :func:`load_from_local_safe` (idempotent; called by ``import kat_backbones``, ``tools/train.py`` and
    ``tools/test.py``)."""
    from mmengine.runner.checkpoint import CheckpointLoader

    allow_mmengine_checkpoints()
    CheckpointLoader.register_scheme(prefixes="", loader=load_from_local_safe, force=True)


install_safe_checkpoint_loading()
