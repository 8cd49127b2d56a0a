"""Reading the logs of mmengine runs: the scalars of ``tools/plot_curves.py`` and the results of ``tools/ablate.py``.

mmengine writes each run to ``WORK_DIR/<timestamp>/``: ``vis_data/scalars.json`` (LocalVisBackend: one JSON record a
line, training records with ``iter`` and ``lr``, validation records with ``step``), ``<timestamp>.json`` (LoggerHook)
and ``<timestamp>.log`` (the text log). A resumed run has several timestamp folders.

- :func:`load_records` / :func:`series`: every scalar of a run, resumed parts joined, as curves over iterations;
- :func:`collect_run_logs` / :func:`primary_metric`: the final validation metrics and seconds per iteration.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = [
    "PRIMARY_METRICS",
    "scalars_files",
    "work_dir_of",
    "run_labels",
    "load_records",
    "series",
    "collect_run_logs",
    "primary_metric",
]

PRIMARY_METRICS = ("coco/bbox_mAP", "mIoU", "accuracy/top1", "coco/segm_mAP", "aAcc")
"""The main metric of a run: the first of these it logged (detection, segmentation, classification)."""
_NON_METRIC_KEYS = {"step", "iter", "epoch", "time", "data_time", "memory", "lr", "base_lr"}
_VAL_LINE_RE = re.compile(r"(?:Iter|Epoch)\(val\)")
_KEY_VALUE_RE = re.compile(r"([\w/\.]+):\s+(-?\d+(?:\.\d+)?(?:e[-+]?\d+)?)")


# --------------------------------------------------------------------------------------------------------------------
# curves: every record of a run


def scalars_files(path: str | os.PathLike) -> list[Path]:
    """The ``scalars.json`` file(s) of a run, oldest first."""
    p = Path(path)
    if p.is_file():
        return [p]
    if (p / "vis_data" / "scalars.json").is_file():
        return [p / "vis_data" / "scalars.json"]
    found = sorted(p.glob("*/vis_data/scalars.json"), key=lambda f: f.parents[1].name)
    if not found:
        raise FileNotFoundError(f"no scalars.json in {p} (expected {p}/<timestamp>/vis_data/scalars.json)")
    return found


def work_dir_of(path: str | os.PathLike) -> Path:
    """The work dir of a run input (for a scalars.json: WORK_DIR/<timestamp>/vis_data/scalars.json)."""
    p = Path(path).resolve()
    if p.is_file():
        return p.parents[2] if p.parent.name == "vis_data" else p.parent
    return p.parent if (p / "vis_data").is_dir() else p


def run_labels(paths: Sequence[str]) -> list[str]:
    """Legend names: the work dirs' names, with their parent folder's name where two runs share a name."""
    dirs = [work_dir_of(path) for path in paths]
    names = [d.name for d in dirs]
    return [f"{d.parent.name}/{d.name}" if names.count(d.name) > 1 else d.name for d in dirs]


def load_records(path: str | os.PathLike) -> list[dict]:
    """All records (JSON lines) of a run, files in time order."""
    records = []
    for file in scalars_files(path):
        with open(file) as f:
            records += [json.loads(line) for line in f if line.strip()]
    return records


def series(records: Sequence[dict], key: str) -> tuple[list[float], list[float], bool]:
    """(x, y, is_train) of ``key``: x in training iterations, sorted, one value per x (the last one logged)."""
    epoch_end: dict[int, int] = {}
    for r in records:
        if "iter" in r and "epoch" in r:
            epoch_end[int(r["epoch"])] = max(epoch_end.get(int(r["epoch"]), 0), int(r["iter"]))
    points: dict[float, float] = {}
    is_train = False
    for r in records:
        if key not in r or not isinstance(r[key], (int, float)):
            continue
        if "iter" in r:
            x = r["iter"]
            is_train = True
        elif epoch_end and "step" in r:  # validation of an epoch-based run: step = epoch
            x = epoch_end.get(int(r["step"]), r["step"])
        else:
            x = r.get("step", len(points))
        points[float(x)] = float(r[key])
    xs = sorted(points)
    return xs, [points[x] for x in xs], is_train


# --------------------------------------------------------------------------------------------------------------------
# results: the final metrics of a finished run


def _latest(paths: list[Path]) -> Path | None:
    return max(paths, key=lambda p: p.stat().st_mtime) if paths else None


def _read_json_lines(path: Path) -> list[dict[str, Any]]:
    records = []
    for line in path.read_text().splitlines():
        line = line.strip()
        if line.startswith("{"):
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return records


def _is_train_record(record: dict[str, Any]) -> bool:
    return "lr" in record or any(k == "loss" or k.startswith("loss_") for k in record)


def _metrics_of(record: dict[str, Any]) -> dict[str, float]:
    return {
        k: float(v) for k, v in record.items()
        if k not in _NON_METRIC_KEYS and isinstance(v, (int, float)) and not isinstance(v, bool)
    }


def collect_run_logs(run_dir: Path) -> dict[str, Any]:
    """Final validation metrics and mean seconds/iteration of a finished run, from its mmengine logs.

    Reads the newest ``*/vis_data/scalars.json`` (LocalVisBackend), else the newest ``*/<timestamp>.json``
    (LoggerHook), else the newest ``*/<timestamp>.log`` (the last ``(val)`` line and the ``time:`` of the training
    lines).

    Returns:
        dict with ``metrics`` (dict), ``sec_per_iter`` (float or None) and ``source`` (the file read).
    """
    scalars = _latest(list(run_dir.glob("*/vis_data/scalars.json")))
    json_logs = [p for p in run_dir.glob("*/*.json") if re.fullmatch(r"\d{8}_\d{6}\.json", p.name)]
    source = scalars or _latest(json_logs)
    metrics: dict[str, float] = {}
    times: list[float] = []
    if source is not None:
        for record in _read_json_lines(source):
            if _is_train_record(record):
                if isinstance(record.get("time"), (int, float)):
                    times.append(float(record["time"]))
            else:
                found = _metrics_of(record)
                if found:
                    metrics = found
    else:
        source = _latest([p for p in run_dir.glob("*/*.log") if re.fullmatch(r"\d{8}_\d{6}\.log", p.name)])
        if source is not None:
            for line in source.read_text(errors="replace").splitlines():
                pairs = dict(_KEY_VALUE_RE.findall(line))
                if _VAL_LINE_RE.search(line):
                    found = _metrics_of({k: float(v) for k, v in pairs.items()})
                    if found:
                        metrics = found
                elif ("Iter(train)" in line or "Epoch(train)" in line) and "time" in pairs:
                    times.append(float(pairs["time"]))
    if len(times) > 1:
        times = times[1:]
    return dict(
        metrics=metrics,
        sec_per_iter=sum(times) / len(times) if times else None,
        source=str(source.relative_to(run_dir)) if source is not None else None,
    )


def primary_metric(metrics: dict[str, float], requested: str | None) -> tuple[str | None, float | None]:
    """(name, value) of the metric of the ``metric`` column."""
    if requested:
        return requested, metrics.get(requested)
    for name in PRIMARY_METRICS:
        if name in metrics:
            return name, metrics[name]
    if metrics:
        name = sorted(metrics)[0]
        return name, metrics[name]
    return None, None
