"""How well a checkpoint's tensors fit a model: :func:`compare_state` and :class:`CheckpointMismatchError`.

Loading with ``strict=False`` (mmengine's ``load_from``, ``tools/test.py``, ``Pretrained`` inits) silently skips
whatever does not fit, so another model's checkpoint "loads" and the random remainder is trained or evaluated. The
loaders of this package compare first and refuse a checkpoint that leaves model tensors unfilled, naming how many
tensors matched, what is missing or of another shape, and the flag that allows a deliberate partial load.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Mapping, Sequence

import torch

__all__ = ["CheckpointMismatchError", "StateFit", "compare_state", "summarize_keys"]


class CheckpointMismatchError(ValueError):
    """A checkpoint does not fill the model (see :class:`StateFit`); the message names the way to load it anyway.

    Attributes:
        fit (StateFit): The comparison.
    """

    def __init__(self, message: str, fit: StateFit) -> None:
        super().__init__(message)
        self.fit = fit


def summarize_keys(keys: Sequence[str], limit: int = 6) -> str:
    """``blocks.0.x, blocks.1.x, ...`` -> ``blocks.*.x (x12)`` (any ``.N.`` index collapsed; a key alone in its
    pattern is shown as is), at most ``limit`` patterns, order kept."""
    groups: dict[str, list[str]] = {}
    for key in keys:
        groups.setdefault(re.sub(r"(^|\.)\d+(?=\.)", r"\1*", key), []).append(key)
    items = [f"{k} (x{len(v)})" if len(v) > 1 else v[0] for k, v in groups.items()]
    more = f", ... ({len(items) - limit} more patterns)" if len(items) > limit else ""
    return ", ".join(items[:limit]) + more


@dataclass
class StateFit:
    """The comparison of a model's state dict with a checkpoint's.

    Attributes:
        total (int): Tensors of the model.
        matched (list[str]): Model keys the checkpoint has with the same shape.
        missing (list[str]): Model keys the checkpoint lacks.
        mismatched (list[tuple[str, tuple, tuple]]): ``(key, checkpoint shape, model shape)``.
        unexpected (list[str]): Checkpoint keys the model lacks.
    """

    total: int
    matched: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    mismatched: list[tuple[str, tuple, tuple]] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        """Every model tensor is filled from the checkpoint."""
        return not self.missing and not self.mismatched

    def describe(self, source: str) -> str:
        """One paragraph: ``N of M tensors of the model match <source>; missing: ...; other shapes: ...``."""
        parts = [f"{len(self.matched)} of {self.total} tensors of the model match {source}"]
        if self.missing:
            parts.append(f"missing from the checkpoint ({len(self.missing)}): {summarize_keys(self.missing)}")
        if self.mismatched:
            shapes = [f"{k} {tuple(a)} vs model {tuple(b)}" for k, a, b in self.mismatched[:4]]
            more = f", ... ({len(self.mismatched) - 4} more)" if len(self.mismatched) > 4 else ""
            parts.append(f"other shapes ({len(self.mismatched)}): {', '.join(shapes)}{more}")
        if self.unexpected:
            parts.append(f"not in the model ({len(self.unexpected)}): {summarize_keys(self.unexpected)}")
        return "; ".join(parts)


def compare_state(model_state: Mapping[str, torch.Tensor], checkpoint_state: Mapping[str, torch.Tensor]) -> StateFit:
    """Compares key by key, shapes included.

    Args:
        model_state (Mapping[str, torch.Tensor]): ``model.state_dict()``.
        checkpoint_state (Mapping[str, torch.Tensor]): The checkpoint's weights, keys already in the model's naming.

    Returns:
        StateFit: The comparison.
    """
    fit = StateFit(total=len(model_state))
    for key, value in model_state.items():
        if key not in checkpoint_state:
            fit.missing.append(key)
            continue
        theirs = checkpoint_state[key]
        their_shape = tuple(theirs.shape) if hasattr(theirs, "shape") else ()
        if their_shape != tuple(value.shape):
            fit.mismatched.append((key, their_shape, tuple(value.shape)))
        else:
            fit.matched.append(key)
    fit.unexpected = [k for k in checkpoint_state if k not in model_state]
    return fit
