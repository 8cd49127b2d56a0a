#!/usr/bin/env python
"""Plot training loss / validation metric curves of one or more mmengine runs (ablation comparisons).

    python tools/plot_curves.py work_dirs/kat_t_maskrcnn --keys loss coco/bbox_mAP --out curves.png
    python tools/plot_curves.py work_dirs/ablate_seg/mmseg/* --keys loss mIoU --out ablation.png --smooth 20
    python tools/plot_curves.py run_a/20250101_120000/vis_data/scalars.json run_b --labels A B --out ab.png

Each input is a work dir, a timestamp folder of one, or a ``scalars.json`` (written by mmengine's LocalVisBackend to
``WORK_DIR/<timestamp>/vis_data/scalars.json``). A work dir with several timestamp folders (a resumed run) is read in
time order and the records are joined; for a step logged twice the later value wins.

One panel per key, one line per run (legend: the run's folder name, or ``--labels``). The x axis is the training
iteration: training records carry ``iter``; validation records of epoch-based runs carry the epoch as ``step``,
which is placed at the last iteration of that epoch (iteration-based runs log the iteration as ``step``).
Default keys: ``loss`` and the first of coco/bbox_mAP, mIoU, accuracy/top1 that the runs logged. ``--smooth N``
draws losses as a trailing N-record moving average over the faint raw curve; ``--logy`` log-scales the losses.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Sequence

from kat_backbones.apps.runlogs import PRIMARY_METRICS, load_records, run_labels, series
from kat_backbones.apps.viz import figure_pixels, new_figure, save_figure

PANEL_W, PANEL_H, HEADER_H = 4.8, 3.4, 0.45
"""Panel width and height, and the legend header height, in inches (DPI 100)."""
PANELS_PER_ROW = 3


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", help="work dirs, timestamp folders or scalars.json files")
    parser.add_argument("--keys", nargs="+", default=None, help="scalars to plot (default: loss + the main metric)")
    parser.add_argument("--out", required=True, help="output PNG")
    parser.add_argument("--labels", nargs="+", default=None, help="legend names, one per run (default: folder names)")
    parser.add_argument("--smooth", type=int, default=1,
                        help="moving-average window for training losses (keys containing 'loss'; default: 1, none)")
    parser.add_argument("--logy", nargs="*", default=None, metavar="KEY",
                        help="log-scale y axis for these keys (no KEY: for every key containing 'loss')")
    parser.add_argument("--title", default=None, help="figure title")
    return parser.parse_args(argv)


def moving_average(values: list[float], window: int) -> list[float]:
    """Trailing moving average (shorter windows at the start)."""
    out, total = [], 0.0
    for i, v in enumerate(values):
        total += v
        if i >= window:
            total -= values[i - window]
        out.append(total / min(i + 1, window))
    return out


def default_keys(runs: Sequence[Sequence[dict]]) -> list[str]:
    present = {k for records in runs for r in records for k in r}
    keys = ["loss"] if "loss" in present else []
    keys += [m for m in PRIMARY_METRICS if m in present][:1]
    if not keys:
        raise SystemExit(f"plot_curves: no loss nor {PRIMARY_METRICS} logged; use --keys (have {sorted(present)})")
    return keys


def figure_size(num_keys: int) -> tuple[float, float]:
    """Figure size in inches for ``num_keys`` panels."""
    cols = min(num_keys, PANELS_PER_ROW)
    rows = math.ceil(num_keys / PANELS_PER_ROW)
    return cols * PANEL_W, rows * PANEL_H + HEADER_H


def plot(runs: Sequence[Sequence[dict]], labels: Sequence[str], keys: Sequence[str], out: str, smooth: int = 1,
         logy: Sequence[str] = (), title: str = "") -> tuple[int, int]:
    """Draws the curves into ``out`` (PNG). Returns its (width, height) in pixels."""
    import matplotlib
    from matplotlib.ticker import MaxNLocator, ScalarFormatter

    missing = [k for k in keys if not any(series(records, k)[0] for records in runs)]
    if missing:
        present = sorted({k for records in runs for r in records for k in r})
        raise SystemExit(f"plot_curves: no run logged {missing}; logged keys: {present}")
    width, height = figure_size(len(keys))
    fig = new_figure(width, height)
    cols = min(len(keys), PANELS_PER_ROW)
    axes = fig.subplots(math.ceil(len(keys) / cols), cols, squeeze=False).ravel()
    colors = matplotlib.colormaps["tab10"]
    handles = {}
    for ax, key in zip(axes, keys):
        smoothed = False
        for i, (records, label) in enumerate(zip(runs, labels)):
            xs, ys, is_train = series(records, key)
            if not xs:
                continue
            color = colors(i % 10)
            marker = "o" if len(xs) <= 30 else None
            if is_train and smooth > 1 and "loss" in key:
                ax.plot(xs, ys, color=color, alpha=0.25, lw=0.8)
                ys = moving_average(ys, smooth)
                smoothed = True
            (line,) = ax.plot(xs, ys, color=color, lw=1.5, marker=marker, ms=3)
            handles.setdefault(label, line)
        ax.set_title(key + (f" (moving average of {smooth})" if smoothed else ""), fontsize=10)
        ax.set_xlabel("iteration", fontsize=9)
        ax.tick_params(labelsize=8)
        ax.grid(alpha=0.3)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if key in logy:
            ax.set_yscale("log")
            ax.yaxis.set_major_formatter(ScalarFormatter())
            ax.yaxis.set_minor_formatter(ScalarFormatter())
    for ax in axes[len(keys):]:
        ax.set_axis_off()
    fig.legend(list(handles.values()), list(handles.keys()), loc="outside upper center", title=title or None,
               ncol=max(1, min(len(handles), int(width / 1.6))), fontsize=9, frameon=False)
    save_figure(fig, out)
    return figure_pixels(width, height)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    runs = [load_records(path) for path in args.runs]
    if args.labels is not None:
        if len(args.labels) != len(args.runs):
            raise SystemExit(f"plot_curves: {len(args.labels)} labels for {len(args.runs)} runs")
        labels = list(args.labels)
    else:
        labels = run_labels(args.runs)
    keys = args.keys or default_keys(runs)
    if args.logy is None:
        logy: list[str] = []
    else:
        logy = args.logy or [k for k in keys if "loss" in k]
    w, h = plot(runs, labels, keys, args.out, args.smooth, logy, args.title or "")
    print(f"plot_curves: {len(runs)} run(s), keys {keys} -> {args.out} ({w}x{h} px)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
