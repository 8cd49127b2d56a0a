"""The one checkpoint reader (and writer) of kat_backbones: every module that needs weights from a file calls it.

Sources:

- a ``.safetensors`` file: read with safetensors (tensors only, nothing is unpickled);
- any other file (``.pth``, ``.pt``, ``.bin``, mmengine ``epoch_N.pth`` ...): ``torch.load(weights_only=True)``. Only
  tensors, containers and the globals on torch's allow-list unpickle; ``weights_only=False`` is never used.
  :mod:`kat_backbones.mm` adds the objects an mmengine Runner checkpoint stores (its message hub: ``HistoryBuffer``
  and numpy arrays) to that allow-list when it is imported, which ``import kat_backbones`` does whenever mmengine and
  mmcv are installed;
- ``timm:NAME`` or ``timm:NAME.TAG``: the pretrained weights of a timm model (``timm.create_model(NAME.TAG,
  pretrained=True)``: timm downloads and caches them, so this needs the hub and a model whose pretrained config has
  weights).

Two levels::

    read_checkpoint(path)   -> the whole object of a file (e.g. a Runner checkpoint with 'meta', 'message_hub', ...)
    read_state_dict(source) -> a flat {name: tensor} dict, from a file, 'timm:NAME[.TAG]' or an in-memory checkpoint

:func:`read_state_dict` unwraps the usual containers (:func:`unwrap_state_dict`): ``'state_dict'`` / ``'model'`` /
``'module'`` entries (repeatedly), then ``module.`` (DistributedDataParallel), ``backbone.`` (a detector or
segmentor backbone saved alone) and ``model.`` (an mmengine wrapper of a timm model, e.g. ``TimmClassifier``)
prefixes when every key carries one.

Errors: a missing file raises :class:`FileNotFoundError`; a global that is not allow-listed raises
:class:`UnsafeCheckpointError` (names the file, the global and how to proceed if the file is trusted); a truncated or
unreadable file raises :class:`CorruptCheckpointError`.
"""

from __future__ import annotations

import os
import pickle
import re
from collections.abc import Mapping
from typing import Any

import torch

__all__ = [
    "TIMM_PREFIX",
    "WRAPPER_KEYS",
    "WRAPPER_PREFIXES",
    "CorruptCheckpointError",
    "UnsafeCheckpointError",
    "read_checkpoint",
    "read_state_dict",
    "save_state_dict",
    "unwrap_state_dict",
]

TIMM_PREFIX = "timm:"
"""``timm:NAME[.TAG]`` names the pretrained weights of a timm model instead of a file."""

WRAPPER_KEYS = ("state_dict", "model", "module")
"""Entries of a checkpoint dict that hold the state dict (timm / mmengine / DeepSpeed-style wrappers)."""

WRAPPER_PREFIXES = ("module.", "backbone.", "model.")
"""Key prefixes stripped when every key of a state dict carries one (DDP, a saved backbone, an mmengine wrapper)."""

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
    """A checkpoint file is truncated or not a checkpoint (e.g. the run was killed while saving it)."""

    def __init__(self, path: str, detail: str) -> None:
        self.path = path
        super().__init__(
            f"checkpoint {path} is truncated or not a torch checkpoint ({detail}). If the run was killed while saving "
            "it, resume from the previous checkpoint: `tools/train.py CONFIG --resume` picks the one named in the "
            "work dir's last_checkpoint file, which is written only after a checkpoint is complete."
        )


def _safetensors_device(map_location: Any) -> str:
    return str(map_location) if isinstance(map_location, (str, torch.device)) else "cpu"


def read_checkpoint(path: str | os.PathLike, map_location: Any = "cpu", mmap: bool = False) -> Any:
    """Reads the whole object stored in a checkpoint file, safely (module docstring: sources, allow-list, errors).

    Args:
        path (str | os.PathLike): A ``.safetensors`` file or a torch file.
        map_location: As :func:`torch.load` (a device for safetensors; anything else reads to CPU). Defaults to
            ``'cpu'``.
        mmap (bool): Torch files: map the tensors instead of reading them (``torch.load(mmap=True)``), for a cheap
            look at the metadata of a large checkpoint. Defaults to False.

    Returns:
        The stored object: a dict of tensors for ``.safetensors``; for torch files whatever was saved (a state dict,
        ``{'state_dict': ..., 'meta': ...}``, an mmengine Runner checkpoint ...).

    Raises:
        FileNotFoundError: ``path`` is not a file.
        UnsafeCheckpointError: The file references a global that is not allow-listed.
        CorruptCheckpointError: The file is truncated or not a checkpoint.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint file {path} does not exist (expected a .pth/.pt/.bin/.safetensors file)")
    if path.endswith(".safetensors"):
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(path, device=_safetensors_device(map_location))
        except SafetensorError as err:
            raise CorruptCheckpointError(path, f"SafetensorError: {err}") from err
    try:
        return torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
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


def unwrap_state_dict(
    checkpoint: Mapping, strip_prefixes: tuple[str, ...] = WRAPPER_PREFIXES
) -> dict[str, torch.Tensor]:
    """The flat tensor mapping inside a checkpoint.

    Descends into ``'state_dict'`` / ``'model'`` / ``'module'`` entries (:data:`WRAPPER_KEYS`, repeatedly), keeps
    the tensors, then strips a prefix of ``strip_prefixes`` for as long as every key carries the same one.

    Args:
        checkpoint (Mapping): A state dict or a checkpoint dict.
        strip_prefixes (tuple[str, ...]): Prefixes to strip. Defaults to :data:`WRAPPER_PREFIXES`; ``()`` keeps the
            keys as stored (e.g. to select ``'backbone.'`` keys yourself).

    Returns:
        dict[str, torch.Tensor]: A new dict (the input is not modified).
    """
    if not isinstance(checkpoint, Mapping):
        raise TypeError(f"unwrap_state_dict: checkpoint must be a mapping, got {type(checkpoint).__name__}")
    state = checkpoint
    while True:
        inner = next((state[k] for k in WRAPPER_KEYS if isinstance(state.get(k), Mapping)), None)
        if inner is None:
            break
        state = inner
    state = {k: v for k, v in state.items() if isinstance(v, torch.Tensor)}
    while state:
        prefix = next((p for p in strip_prefixes if all(k.startswith(p) for k in state)), None)
        if prefix is None:
            break
        state = {k[len(prefix) :]: v for k, v in state.items()}
    return state


def _read_timm_weights(name: str) -> dict[str, torch.Tensor]:
    import timm

    if not timm.is_model(name):
        raise ValueError(f"{TIMM_PREFIX}{name}: {name!r} is not a registered timm model (expected timm:NAME[.TAG])")
    model = timm.create_model(name, pretrained=False)
    cfg = model.pretrained_cfg or {}
    if not any(cfg.get(k) for k in ("url", "hf_hub_id", "file", "state_dict")):
        raise ValueError(f"{TIMM_PREFIX}{name}: timm model {name!r} has no pretrained weights to load "
                         f"(pretrained_cfg={cfg})")
    return timm.create_model(name, pretrained=True).state_dict()


def read_state_dict(
    source: str | os.PathLike | Mapping,
    map_location: Any = "cpu",
    strip_prefixes: tuple[str, ...] = WRAPPER_PREFIXES,
) -> dict[str, torch.Tensor]:
    """A flat state dict from a file, ``timm:NAME[.TAG]`` or an in-memory checkpoint.

    Args:
        source (str | os.PathLike | Mapping): A checkpoint file (:func:`read_checkpoint`), ``timm:NAME[.TAG]``, or a
            state dict / checkpoint dict already in memory.
        map_location: See :func:`read_checkpoint`. Defaults to ``'cpu'``.
        strip_prefixes (tuple[str, ...]): See :func:`unwrap_state_dict`. Defaults to :data:`WRAPPER_PREFIXES`.

    Returns:
        dict[str, torch.Tensor]: The tensors, unwrapped by :func:`unwrap_state_dict`.

    Raises:
        ValueError: ``timm:NAME`` names no timm model, or one without pretrained weights.
        TypeError: ``source`` is neither a path nor a mapping, or the file holds no mapping.
        FileNotFoundError, UnsafeCheckpointError, CorruptCheckpointError: See :func:`read_checkpoint`.
    """
    if isinstance(source, Mapping):
        return unwrap_state_dict(source, strip_prefixes)
    if not isinstance(source, (str, os.PathLike)):
        raise TypeError(
            f"read_state_dict: source must be a path, 'timm:NAME' or a mapping, got {type(source).__name__}"
        )
    path = os.fspath(source)
    if path.startswith(TIMM_PREFIX):
        return _read_timm_weights(path[len(TIMM_PREFIX) :])
    checkpoint = read_checkpoint(path, map_location=map_location)
    if not isinstance(checkpoint, Mapping):
        raise TypeError(f"checkpoint {path} holds a {type(checkpoint).__name__}, not a state dict")
    return unwrap_state_dict(checkpoint, strip_prefixes)


def save_state_dict(state_dict: Mapping[str, torch.Tensor], path: str | os.PathLike) -> None:
    """Writes a state dict (tensors moved to CPU, made contiguous): ``.safetensors`` by extension, else
    :func:`torch.save`."""
    path = os.fspath(path)
    tensors = {k: v.detach().cpu().contiguous() for k, v in state_dict.items()}
    if path.endswith(".safetensors"):
        from safetensors.torch import save_file

        save_file(tensors, path)
    else:
        torch.save(tensors, path)
