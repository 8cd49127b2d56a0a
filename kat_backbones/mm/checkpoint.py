"""Safe checkpoint loading for mmengine under torch >= 2.6 (``torch.load(weights_only=True)``).

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

A file that references anything else (e.g. a pickled callable whose ``__reduce__`` calls ``os.system``) is refused
with :class:`UnsafeCheckpointError`, which names the file, the offending global and how to proceed if the file is
trusted; a truncated file (a run killed while saving) raises :class:`CorruptCheckpointError`.

``import kat_backbones`` calls :func:`install_safe_checkpoint_loading`: the allow-list, and mmengine's loader for
local files (``CheckpointLoader`` scheme ``''``, used by ``Runner.resume`` / ``load_checkpoint`` and by
``tools/test.py``) replaced by :func:`load_from_local_safe`, which loads the same way with the errors above.
"""

from __future__ import annotations

import os
import os.path as osp
import pickle
import re
from typing import Any, Callable

import torch

__all__ = [
    "CorruptCheckpointError",
    "UnsafeCheckpointError",
    "allow_mmengine_checkpoints",
    "history_buffer_getattr",
    "install_safe_checkpoint_loading",
    "load_from_local_safe",
    "mmengine_safe_globals",
    "safe_torch_load",
]

#: The statistics methods a pickled :class:`mmengine.logging.HistoryBuffer` refers to (``getattr(HistoryBuffer,
#: name)`` in the pickle: protocol-2 pickles spell nested names that way).
HISTORY_BUFFER_STATISTICS = ("min", "max", "current", "mean")

_GLOBAL_RE = re.compile(r"GLOBAL ([\w.]+)")


class UnsafeCheckpointError(pickle.UnpicklingError):
    """A checkpoint references a global that is not allow-listed for ``weights_only`` loading.

    Attributes:
        path (str): The file.
        global_name (str | None): The offending global (``module.name``), when torch's message names one.
    """

    def __init__(self, path: str, global_name: str | None, detail: str) -> None:
        self.path = path
        self.global_name = global_name
        what = f"the global {global_name}" if global_name else "an object"
        allow = (
            f"torch.serialization.add_safe_globals([{global_name}]) (or the torch.serialization.safe_globals"
            f"([{global_name}]) context manager)"
            if global_name
            else "torch.serialization.add_safe_globals([...]) with the object named below"
        )
        super().__init__(
            f"refusing to load checkpoint {path}: it references {what}, which is not on the weights-only allow-list "
            "(torch.load(weights_only=True) + the mmengine globals of kat_backbones.mm.checkpoint). Unpickling a "
            "global can run arbitrary code. If you trust this file and where it came from, allow exactly this global "
            f"before loading: {allow}; or, in a trusted environment, load it once with torch.load(path, "
            "weights_only=False) and re-save only its tensors (e.g. {'state_dict': ...}). "
            f"torch said: {detail}"
        )


class CorruptCheckpointError(RuntimeError):
    """A checkpoint file is truncated or not a torch file (e.g. the run was killed while saving it)."""

    def __init__(self, path: str, detail: str) -> None:
        self.path = path
        super().__init__(
            f"checkpoint {path} is truncated or not a torch checkpoint ({detail}). If the run was killed while saving "
            "it, resume from the previous checkpoint: `tools/train.py CONFIG --resume` picks the one named in the "
            "work dir's last_checkpoint file, which is written only after a checkpoint is complete."
        )


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


def safe_torch_load(path: str | os.PathLike, map_location: Any = None) -> Any:
    """``torch.load(path, weights_only=True)`` with the mmengine allow-list and clear errors.

    Args:
        path (str | os.PathLike): The file.
        map_location: As :func:`torch.load`. Defaults to None.

    Raises:
        UnsafeCheckpointError: The file references a global that is not allow-listed.
        CorruptCheckpointError: The file is truncated or not a torch file.
    """
    path = str(path)
    allow_mmengine_checkpoints()
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        message = str(err)
        found = _GLOBAL_RE.search(message)
        # torch's message is long (it explains weights_only); keep the line that says what failed
        detail = next((line.strip() for line in message.splitlines() if "GLOBAL" in line or "reduce" in line), message)
        raise UnsafeCheckpointError(path, found.group(1) if found else None, detail) from err
    except RuntimeError as err:
        if "PytorchStreamReader" in str(err) or "zip archive" in str(err):
            raise CorruptCheckpointError(path, str(err).splitlines()[0]) from err
        raise
    except EOFError as err:  # a legacy (non-zip) file cut short
        raise CorruptCheckpointError(path, f"EOFError: {err}") from err


def load_from_local_safe(filename: str, map_location: Any = None) -> Any:
    """mmengine's local-file checkpoint loader (``CheckpointLoader`` scheme ``''``), through :func:`safe_torch_load`.

    Same behaviour as ``mmengine.runner.checkpoint.load_from_local`` on torch >= 2.6 (``weights_only=True``), plus the
    mmengine allow-list and the errors of :func:`safe_torch_load`.
    """
    filename = osp.expanduser(filename)
    if not osp.isfile(filename):
        raise FileNotFoundError(f"{filename} can not be found.")
    return safe_torch_load(filename, map_location=map_location)


def install_safe_checkpoint_loading() -> None:
    """Allow-lists the mmengine globals and makes mmengine load local checkpoints with
    :func:`load_from_local_safe` (idempotent; called by ``import kat_backbones``, ``tools/train.py`` and
    ``tools/test.py``)."""
    from mmengine.runner.checkpoint import CheckpointLoader

    allow_mmengine_checkpoints()
    CheckpointLoader.register_scheme(prefixes="", loader=load_from_local_safe, force=True)


install_safe_checkpoint_loading()
