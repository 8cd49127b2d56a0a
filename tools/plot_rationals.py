#!/usr/bin/env python
"""Plot every learned group-rational of a KAT model over the function it was initialised as.

    python tools/plot_rationals.py work_dirs/kat_t_in1k/epoch_300.pth --out rationals.png
    python tools/plot_rationals.py kat_tiny_patch16_224 --pretrained --out kat_tiny.png --layers 0,5,11
    python tools/plot_rationals.py work_dirs/kat_t_maskrcnn/iter_184375.pth --out det.png --layers 0-3 --range -5 5

The source is a checkpoint file (a timm KAT state dict ``.pth``/``.safetensors``, a TimmClassifier run, or an
mmdet/mmseg Runner checkpoint: keys such as ``backbone.blocks.3.mlp.act2.weight_numerator`` under ``'state_dict'``;
read with ``torch.load(weights_only=True)``, mmengine's message hub allow-listed, see :mod:`kat_backbones.checkpoint`)
or a timm model name (``timm.create_model``, ``--pretrained`` for its released weights).

One panel per rational module (block N: act1 and act2 side by side, ``--blocks-per-row`` blocks per row); in each
panel one line per channel group g (F_g(x) = P(x) / Q_g(x), or P_g / Q_g with per-group numerators), computed with
THE formula (``kat_backbones.ops.rational_1d``), over the initial function as a dashed black line: act1 starts as
identity, act2 as ``--act2-init`` (default: the model's own act2 init for a timm model name, the ``act_init`` /
model name recorded in a Runner checkpoint's config, else swish). The panel title gives max |F_g - init| on the
plotted range.
"""

from __future__ import annotations

import argparse
import math
import os
import re
import sys

import torch

import kat_backbones  # noqa: F401  (registers the KAT models in timm)
from kat_backbones.apps.viz import (
    RationalEntry,
    figure_pixels,
    find_rationals,
    init_curve,
    new_figure,
    parse_index_list,
    save_figure,
)
from kat_backbones.checkpoint import read_checkpoint

PANEL_W, PANEL_H = 2.6, 2.1
"""Panel width and height in inches (DPI 100)."""
LEGEND_ENTRY_W, LEGEND_ROW_H, TITLE_H = 1.45, 0.2, 0.35
"""Legend header geometry in inches: width of one entry, height of one row of entries, title line."""

NUM_POINTS = 601


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source", help="checkpoint file (.pth/.safetensors; timm, mmdet, mmseg, mmengine) or timm name")
    parser.add_argument("--out", required=True, help="output PNG")
    parser.add_argument("--layers", default=None, help="blocks to plot, e.g. 0,3,11 or 0-3,8 (default: all)")
    parser.add_argument("--range", nargs=2, type=float, default=(-3.0, 3.0), metavar=("LO", "HI"),
                        help="x range (default: -3 3, where the init coefficients were fitted)")
    parser.add_argument("--act2-init", default=None,
                        help="initial function of act2 (swish, gelu, ...); default: the model's, else swish")
    parser.add_argument("--blocks-per-row", type=int, default=3, help="blocks per row of panels (default: 3)")
    parser.add_argument("--pretrained", action="store_true", help="timm model name: load its pretrained weights")
    parser.add_argument("--title", default=None, help="figure title (default: the source)")
    return parser.parse_args(argv)


def _act_init_from_cfg_text(text: str) -> str | None:
    """act2 init recorded in a config dump: ``act_init='gelu'`` (dense backbones) or a KAT model name."""
    m = re.search(r"act_init\s*=\s*['\"](\w+)['\"]", text)
    if m:
        return m.group(1)
    m = re.search(r"model_name\s*=\s*['\"]kat_\w+?_(swish|gelu)_patch", text)
    return m.group(1) if m else None


def load_source(source: str, pretrained: bool = False) -> tuple[list[RationalEntry], str | None]:
    """Rationals of ``source`` and the act2 init it declares (None when unknown)."""
    if os.path.exists(source):
        checkpoint = read_checkpoint(source)
        meta = checkpoint.get("meta") if isinstance(checkpoint.get("meta"), dict) else {}
        cfg_text = meta.get("cfg")
        act2 = _act_init_from_cfg_text(cfg_text) if isinstance(cfg_text, str) else None
        return find_rationals(checkpoint), act2
    import timm

    if not timm.is_model(source):
        raise SystemExit(f"plot_rationals: {source!r} is neither a file nor a registered timm model name")
    model = timm.create_model(source, pretrained=pretrained)
    inits = {m.init for name, m in model.named_modules() if name.endswith("act2") and hasattr(m, "init")}
    return find_rationals(model.state_dict()), (inits.pop() if len(inits) == 1 else None)


def select_blocks(entries: list[RationalEntry], layers: str | None) -> list[RationalEntry]:
    """Entries of the blocks listed in ``layers`` (all when None); entries outside blocks are kept."""
    if layers is None:
        return entries
    wanted = set(parse_index_list(layers))
    have = {e.block for e in entries if e.block is not None}
    missing = sorted(wanted - have)
    if missing:
        raise SystemExit(f"plot_rationals: no block(s) {missing}; the source has blocks {sorted(have)}")
    return [e for e in entries if e.block is None or e.block in wanted]


def layout(entries: list[RationalEntry], blocks_per_row: int) -> tuple[list[list[RationalEntry | None]], int]:
    """Panels in rows: each block's rationals side by side (act1, act2), ``blocks_per_row`` blocks per row."""
    acts = sorted({e.act for e in entries})
    groups: dict[int | None, dict[str, RationalEntry]] = {}
    for e in entries:
        groups.setdefault(e.block, {})[e.act] = e
    cells = [[by_act.get(a) for a in acts] for by_act in groups.values()]
    per_row = max(1, min(blocks_per_row, len(cells)))
    rows = [sum(cells[i:i + per_row], []) for i in range(0, len(cells), per_row)]
    ncols = per_row * len(acts)
    rows = [row + [None] * (ncols - len(row)) for row in rows]
    return rows, ncols


def legend_columns(ncols: int, num_entries: int) -> int:
    """Entries per legend row for a figure ``ncols`` panels wide."""
    return max(1, min(num_entries, int(ncols * PANEL_W / LEGEND_ENTRY_W)))


def figure_size(nrows: int, ncols: int, num_legend_entries: int) -> tuple[float, float]:
    """Figure size in inches: the panel grid under a header (title + legend rows)."""
    legend_rows = math.ceil(num_legend_entries / legend_columns(ncols, num_legend_entries))
    return ncols * PANEL_W, nrows * PANEL_H + TITLE_H + legend_rows * LEGEND_ROW_H


def plot(entries: list[RationalEntry], out: str, x_range: tuple[float, float], act2_init: str,
         blocks_per_row: int = 3, title: str = "") -> tuple[int, int]:
    """Draws the grid into ``out`` (PNG). Returns its (width, height) in pixels."""
    import matplotlib

    rows, ncols = layout(entries, blocks_per_row)
    max_groups = max(e.groups for e in entries)
    num_inits = len({e.act == "act1" for e in entries})
    width, height = figure_size(len(rows), ncols, max_groups + num_inits)
    fig = new_figure(width, height)
    axes = fig.subplots(len(rows), ncols, squeeze=False)
    x = torch.linspace(x_range[0], x_range[1], NUM_POINTS, dtype=torch.float64)
    cmap = matplotlib.colormaps["viridis"]
    colors = [cmap(g / max(1, max_groups - 1) * 0.9) for g in range(max_groups)]
    handles = {}
    for r, row in enumerate(rows):
        for c, entry in enumerate(row):
            ax = axes[r][c]
            if entry is None:
                ax.set_axis_off()
                continue
            init_name = "identity" if entry.act == "act1" else act2_init
            y0, init_label = init_curve(init_name, entry.order, x)
            y = entry.values(x)
            for g in range(entry.groups):
                (line,) = ax.plot(x, y[g], color=colors[g], lw=1.2, alpha=0.9)
                handles.setdefault(f"group {g}", line)
            (init_line,) = ax.plot(x, y0, color="black", ls=":" if entry.act == "act1" else "--", lw=1.1)
            handles.setdefault(init_label if entry.act == "act2" else "init: identity (act1)", init_line)
            dev = (y - y0).abs().max().item()
            where = f"block {entry.block}" if entry.block is not None else entry.name.rsplit(".", 1)[0]
            shared = "" if entry.numerator.shape[0] == 1 else ", num/group"
            ax.set_title(f"{where} {entry.act} (G={entry.groups}{shared})\nmax|F-init| = {dev:.3g}", fontsize=8)
            ax.axhline(0, color="0.8", lw=0.5, zorder=0)
            ax.axvline(0, color="0.8", lw=0.5, zorder=0)
            ax.tick_params(labelsize=7)
            ax.grid(alpha=0.25)
    fig.legend(list(handles.values()), list(handles.keys()), loc="outside upper center", title=title,
               title_fontsize=10, ncol=legend_columns(ncols, len(handles)), fontsize=8, frameon=False)
    save_figure(fig, out)
    return figure_pixels(width, height)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    entries, declared = load_source(args.source, args.pretrained)
    if not entries:
        raise SystemExit(f"plot_rationals: no rational (act*.weight_numerator/denominator) in {args.source}")
    entries = select_blocks(entries, args.layers)
    act2_init = args.act2_init or declared or "swish"
    lo, hi = args.range
    if not lo < hi:
        raise SystemExit(f"plot_rationals: --range needs LO < HI, got {lo} {hi}")
    title = args.title if args.title is not None else f"{args.source}  (act2 init: {act2_init})"
    w, h = plot(entries, args.out, (lo, hi), act2_init, args.blocks_per_row, title)
    print(f"plot_rationals: {len(entries)} rationals -> {args.out} ({w}x{h} px, act2 init {act2_init})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
