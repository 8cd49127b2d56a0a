"""Helpers shared by the plotting tools (``tools/plot_rationals.py``, ``tools/plot_curves.py``).

- The rationals of a state dict (:func:`find_rationals`) and their values on a grid through THE formula
  (:func:`kat_backbones.ops.rational_1d`), next to the function they were initialised as (:func:`init_curve`).
- Figures of a fixed pixel size (:func:`new_figure`, :func:`save_figure`), so tests can check what a tool wrote.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass

import torch

from kat_backbones.checkpoint import unwrap_state_dict
from kat_backbones.layers.rational_init import INIT_ALIASES, get_rational_init
from kat_backbones.ops import rational_1d

__all__ = [
    "DPI",
    "RationalEntry",
    "find_rationals",
    "parse_index_list",
    "init_curve",
    "new_figure",
    "figure_pixels",
    "save_figure",
]

DPI = 100
"""Resolution of every figure the tools save: a figure of W x H inches is a PNG of (W x DPI) x (H x DPI) pixels."""

# --------------------------------------------------------------------------------------------------------------------
# rationals
# --------------------------------------------------------------------------------------------------------------------

_RATIONAL_PARAM = re.compile(r"^(?P<module>(?:.*\.)?(?P<act>act\d+))\.weight_(?P<part>numerator|denominator)$")
_BLOCK = re.compile(r"(?:^|\.)(?:blocks|layers)\.(\d+)\.")
_WRAPPER_PREFIXES = ("backbone.", "model.", "module.")


@dataclass
class RationalEntry:
    """One group-rational module of a state dict.

    Attributes:
        name: module name without wrapper prefixes, e.g. ``blocks.3.mlp.act2``.
        block: transformer block index (from ``blocks.N.``), or None.
        act: ``'act1'`` or ``'act2'`` (the last ``actK`` in the name).
        numerator: (1 or G, m+1) coefficients a0..am, float64.
        denominator: (G, n) coefficients b1..bn, float64.
    """

    name: str
    block: int | None
    act: str
    numerator: torch.Tensor
    denominator: torch.Tensor

    @property
    def groups(self) -> int:
        return self.denominator.shape[0]

    @property
    def order(self) -> tuple[int, int]:
        return self.numerator.shape[1] - 1, self.denominator.shape[1]

    def values(self, x: torch.Tensor) -> torch.Tensor:
        """F_g(x) of every group g: (G, len(x)), float64."""
        num = self.numerator.expand(self.groups, -1)
        return torch.stack([rational_1d(x, num[g], self.denominator[g]) for g in range(self.groups)])


def _display_name(module: str) -> str:
    while module.startswith(_WRAPPER_PREFIXES):
        module = module.split(".", 1)[1]
    return module


def find_rationals(state_dict: Mapping[str, torch.Tensor]) -> list[RationalEntry]:
    """Every rational (``...actK.weight_numerator`` + ``...actK.weight_denominator``) of a state dict or checkpoint,
    sorted by block and name. Works for timm KAT state dicts, TimmClassifier runs (``model.`` prefix) and mmdet/mmseg
    checkpoints (``backbone.`` prefix, under ``'state_dict'``)."""
    state_dict = unwrap_state_dict(state_dict)
    parts: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in state_dict.items():
        match = _RATIONAL_PARAM.match(key)
        if match:
            parts.setdefault(match["module"], {})[match["part"]] = value
    entries = []
    for module, p in parts.items():
        if set(p) != {"numerator", "denominator"}:
            raise ValueError(f"rational {module!r} lacks its {({'numerator', 'denominator'} - set(p)).pop()}")
        num = p["numerator"].detach().to("cpu", torch.float64)
        den = p["denominator"].detach().to("cpu", torch.float64)
        num = num.reshape(1, -1) if num.dim() == 1 else num
        if num.dim() != 2 or den.dim() != 2 or num.shape[0] not in (1, den.shape[0]):
            raise ValueError(f"rational {module!r}: bad shapes numerator {tuple(num.shape)}, denominator "
                             f"{tuple(den.shape)} (expected (1 or G, m+1) and (G, n))")
        name = _display_name(module)
        block = _BLOCK.search("." + name + ".")
        act = _RATIONAL_PARAM.match(module + ".weight_numerator")["act"]
        entries.append(RationalEntry(name, int(block.group(1)) if block else None, act, num, den))
    entries.sort(key=lambda e: (-1 if e.block is None else e.block, e.name))
    return entries


def parse_index_list(spec: str) -> list[int]:
    """``'0,3,11'`` / ``'0-3,8'`` -> sorted unique indices."""
    out: set[int] = set()
    for item in spec.replace(" ", "").split(","):
        if not item:
            continue
        m = re.fullmatch(r"(\d+)(?:-(\d+))?", item)
        if not m:
            raise ValueError(f"bad index list item {item!r} in {spec!r} (use e.g. 0,3,11 or 0-3,8)")
        lo = int(m[1])
        hi = lo if m[2] is None else int(m[2])
        if hi < lo:
            raise ValueError(f"empty range {item!r} in {spec!r}")
        out.update(range(lo, hi + 1))
    return sorted(out)


_EXACT = {
    "identity": lambda x: x,
    "swish": torch.nn.functional.silu,
    "gelu": torch.nn.functional.gelu,
    "relu": torch.relu,
    "tanh": torch.tanh,
    "sigmoid": torch.sigmoid,
}


def init_curve(name: str, order: tuple[int, int], x: torch.Tensor) -> tuple[torch.Tensor, str]:
    """Values of the init ``name`` on ``x`` and a legend label.

    The packaged initial rational at ``order`` (``kat_backbones.layers.rational_init``, evaluated with THE formula)
    when there is one, else the exact function (labelled so).
    """
    key = INIT_ALIASES.get(name.lower(), name.lower())
    try:
        num, den = get_rational_init(key, order)
    except ValueError:
        if key not in _EXACT:
            raise
        return _EXACT[key](x), f"init: {key} (exact; no {order} rational packaged)"
    num_t = torch.tensor(num, dtype=x.dtype)
    den_t = torch.tensor(den, dtype=x.dtype)
    return rational_1d(x, num_t, den_t), f"init: {key}"


# --------------------------------------------------------------------------------------------------------------------
# figures
# --------------------------------------------------------------------------------------------------------------------


def new_figure(width_in: float, height_in: float):
    """A matplotlib figure (constrained layout) of exactly ``width_in`` x ``height_in`` inches at :data:`DPI`.

    A bare :class:`matplotlib.figure.Figure` (no pyplot, no global state): it renders with Agg when saved, whatever
    the session's interactive backend.
    """
    from matplotlib.figure import Figure

    # the pixel size is what the tests check: round the inches to whole pixels
    w = math.floor(width_in * DPI + 0.5) / DPI
    h = math.floor(height_in * DPI + 0.5) / DPI
    return Figure(figsize=(w, h), dpi=DPI, layout="constrained")


def figure_pixels(width_in: float, height_in: float) -> tuple[int, int]:
    """(width, height) in pixels of a :func:`new_figure` saved by :func:`save_figure`."""
    return math.floor(width_in * DPI + 0.5), math.floor(height_in * DPI + 0.5)


def save_figure(fig, path: str | os.PathLike) -> None:
    """Saves ``fig`` as PNG at :data:`DPI` (no tight bounding box: the size stays the figure's), creating folders."""
    path = os.fspath(path)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=DPI, format="png", facecolor="white")
