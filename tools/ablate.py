#!/usr/bin/env python
"""Run a set of (ablation) configs one after another and tabulate their results.

    python tools/ablate.py configs/ablations/mmseg/*.py
    python tools/ablate.py 'configs/ablations/mmdet/*.py' --work-dir work_dirs/ablate_det
    python tools/ablate.py configs/ablations/mmseg --cfg-options train_cfg.max_iters=40   # a folder: its *.py
    python tools/ablate.py configs/ablations/imagenet/*.py --launcher pytorch --gpus 8     # via tools/dist_train.sh

Each config is trained in its own subprocess by ``tools/train.py`` (``--launcher pytorch --gpus N``: by
``tools/dist_train.sh CONFIG N``) with ``--work-dir WORK_DIR/NAME``, NAME being the config's path relative to the
configs' common folder without ``.py`` (``mmseg/groups_4``). Its output goes to ``WORK_DIR/NAME/ablate_train.log``;
the terminal shows a progress line per run (iterations read from that log) and a one-line result.

Collected per run:

- the final validation metrics, from the run's mmengine ``vis_data/scalars.json`` (falling back to the ``.json``
  and ``.log`` files of the run); the ``metric`` column is ``--metric`` or the first of ``coco/bbox_mAP``, ``mIoU``,
  ``accuracy/top1`` present, and every metric gets its own CSV column;
- seconds per training iteration: the mean of the logged ``time`` of the training records (the first record, which
  includes warm-up, is left out when there are more);
- parameters of the whole model and GFLOPs of one forward pass (backbone + neck for detectors/segmentors, the
  network for classifiers) at the config's input size (or ``--flops-shape``), both in the KAT paper's convention and
  with attention (and Fourier-KArAt) matmuls, counted by :mod:`kat_backbones.flops` on the config with the same
  ``--cfg-options``.

Results go to ``WORK_DIR/summary.csv`` and ``WORK_DIR/summary.md`` (a Markdown table), rewritten after every run.
Resumable: a finished run leaves ``WORK_DIR/NAME/ablate_result.json`` and is skipped next time (``--force`` reruns
it); an interrupted run whose work dir has a checkpoint continues from it (``tools/train.py --resume``). A failed run
is reported (status ``failed``, exit code) and the next one starts; the exit code is 1 if any run failed.
"""

from __future__ import annotations

import argparse
import csv
import glob
import json
import math
import os
import os.path as osp
import re
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from kat_backbones.apps.runlogs import collect_run_logs, primary_metric

REPO = Path(__file__).resolve().parents[1]
RESULT_FILE = "ablate_result.json"
LOG_FILE = "ablate_train.log"
_ITER_RE = re.compile(r"Iter\(train\)\s*\[\s*(\d+)/(\d+)\]")
_EPOCH_RE = re.compile(r"Epoch\(train\)\s*\[\s*(\d+)\]\[\s*(\d+)/(\d+)\]")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parses the command line."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("configs", nargs="+", help="config files, globs or folders (their *.py)")
    parser.add_argument("--work-dir", default="work_dirs/ablate", help="root of the runs (default: work_dirs/ablate)")
    parser.add_argument("--cfg-options", nargs="+", default=[], metavar="KEY=VALUE",
                        help="passed to every tools/train.py run (and applied when counting parameters/FLOPs)")
    parser.add_argument("--launcher", choices=("none", "pytorch"), default="none",
                        help="none: one tools/train.py process per run; pytorch: tools/dist_train.sh CONFIG GPUS")
    parser.add_argument("--gpus", type=int, default=1, help="processes per run with --launcher pytorch (default: 1)")
    parser.add_argument("--metric", default=None, help="metric of the 'metric' column (default: see above)")
    parser.add_argument("--flops-shape", type=int, nargs="+", default=None, metavar="S",
                        help="input H W (or one size) for the FLOP count (default: from the config)")
    parser.add_argument("--no-flops", action="store_true", help="skip parameter/FLOP counting")
    parser.add_argument("--force", action="store_true", help="rerun finished runs")
    parser.add_argument("--dry-run", action="store_true", help="print the commands and the summary of finished runs")
    parser.add_argument("--train-args", nargs=argparse.REMAINDER, default=[],
                        help="everything after this goes to tools/train.py as is (e.g. --amp)")
    args = parser.parse_args(argv)
    if args.gpus < 1:
        parser.error("--gpus must be >= 1")
    if args.flops_shape is not None and len(args.flops_shape) not in (1, 2):
        parser.error(f"--flops-shape takes one or two sizes, got {args.flops_shape}")
    return args


# ---------------------------------------------------------------------------------------------------------------
# configs and runs


def expand_configs(patterns: Sequence[str]) -> list[Path]:
    """Files, globs and folders -> unique config paths, in the order given (a glob/folder sorted)."""
    found: list[Path] = []
    for pattern in patterns:
        if osp.isdir(pattern):
            matches = sorted(glob.glob(osp.join(pattern, "*.py")))
        elif glob.has_magic(pattern):
            matches = sorted(glob.glob(pattern, recursive=True))
        else:
            matches = [pattern]
        if not matches:
            raise SystemExit(f"ablate: no config matches {pattern!r}")
        for match in matches:
            path = Path(match).resolve()
            if not path.is_file():
                raise SystemExit(f"ablate: {match} is not a file")
            if path not in found:
                found.append(path)
    return found


def run_names(configs: Sequence[Path]) -> list[str]:
    """Names of the runs: paths relative to the configs' common folder, without ``.py`` (``mmseg/groups_4``)."""
    if len(configs) == 1:
        return [configs[0].stem]
    root = Path(osp.commonpath([str(p.parent) for p in configs]))
    return [p.relative_to(root).with_suffix("").as_posix() for p in configs]


def train_command(args: argparse.Namespace, config: Path, run_dir: Path, resume: bool) -> list[str]:
    """The command line of one run."""
    if args.launcher == "pytorch":
        cmd = ["bash", str(REPO / "tools" / "dist_train.sh"), str(config), str(args.gpus)]
    else:
        cmd = [sys.executable, str(REPO / "tools" / "train.py"), str(config)]
    cmd += ["--work-dir", str(run_dir)]
    if resume:
        cmd.append("--resume")
    if args.cfg_options:
        cmd += ["--cfg-options", *args.cfg_options]
    return cmd + list(args.train_args)


def _has_checkpoint(run_dir: Path) -> bool:
    return (run_dir / "last_checkpoint").is_file()


def _format_duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def _read_progress(log_path: Path) -> str | None:
    """The latest training position in a run's log: ``iter 12/40`` or ``epoch 3 iter 5/10``."""
    try:
        with open(log_path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - 16384))
            tail = f.read().decode("utf-8", errors="replace")
    except OSError:
        return None
    iters = _ITER_RE.findall(tail)
    if iters:
        return f"iter {iters[-1][0]}/{iters[-1][1]}"
    epochs = _EPOCH_RE.findall(tail)
    if epochs:
        return f"epoch {epochs[-1][0]} iter {epochs[-1][1]}/{epochs[-1][2]}"
    return None


def run_one(cmd: list[str], log_path: Path, label: str, interactive: bool) -> tuple[int, float]:
    """Runs ``cmd`` with its output in ``log_path``, showing progress; returns (exit code, wall seconds)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    start = time.perf_counter()
    last_shown, last_report = None, start
    with open(log_path, "w") as log:
        log.write("$ " + " ".join(cmd) + "\n")
        log.flush()
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=os.getcwd(), env=env)
        try:
            while proc.poll() is None:
                time.sleep(1.0)
                progress = _read_progress(log_path)
                now = time.perf_counter()
                if progress and interactive:
                    print(f"\r{label} {progress} ({_format_duration(now - start)})\033[K", end="", flush=True)
                elif progress and progress != last_shown and now - last_report >= 30:
                    print(f"{label} {progress} ({_format_duration(now - start)})", flush=True)
                    last_report = now
                last_shown = progress or last_shown
        except KeyboardInterrupt:
            proc.terminate()
            proc.wait()
            raise
    if interactive:
        print("\r\033[K", end="", flush=True)
    return proc.returncode, time.perf_counter() - start


# ---------------------------------------------------------------------------------------------------------------
# results


def measure_model(config: Path, cfg_options: Sequence[str], shape: Sequence[int] | None) -> dict[str, Any]:
    """Parameters and GFLOPs (paper convention / full) of a config's model, with ``cfg_options`` applied."""
    import warnings

    warnings.filterwarnings("ignore", category=UserWarning)  # toolbox deprecation notices while building
    from mmengine.config import DictAction

    from kat_backbones.apps.complexity import build_target, measure, parse_hw

    options = None
    if cfg_options:
        parser = argparse.ArgumentParser()
        parser.add_argument("--o", nargs="+", action=DictAction)
        options = parser.parse_args(["--o", *cfg_options]).o
    target = build_target(str(config), parse_hw(shape, "--flops-shape"), 1, options)
    report = measure(target)
    h, w = target.input_hw
    return dict(
        params=report.params,
        gflops_paper=report.paper / 1e9,
        gflops_full=report.full / 1e9,
        flops_input=f"1x3x{h}x{w}",
        flops_of=target.counted,
    )


# ---------------------------------------------------------------------------------------------------------------
# summary


def _fmt(value: Any, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, float):
        return f"{value:.{digits}g}" if abs(value) < 1e5 else f"{value:,.0f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def write_summary(rows: list[dict[str, Any]], work_dir: Path, metric: str | None) -> tuple[Path, Path]:
    """Writes ``summary.csv`` (every metric as a column) and ``summary.md``; returns their paths."""
    metric_keys = sorted({k for row in rows for k in (row.get("metrics") or {})})
    base_cols = ["name", "config", "status", "metric", "value", "params", "gflops_paper", "gflops_full",
                 "sec_per_iter", "wall_s", "flops_input"]
    csv_path, md_path = work_dir / "summary.csv", work_dir / "summary.md"
    table = []
    for row in rows:
        name, value = primary_metric(row.get("metrics") or {}, metric)
        flat = {**{k: row.get(k) for k in base_cols}, "metric": name, "value": value}
        flat.update({k: (row.get("metrics") or {}).get(k) for k in metric_keys})
        table.append(flat)
    with open(csv_path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=base_cols + metric_keys)
        writer.writeheader()
        for flat in table:
            writer.writerow({k: ("" if v is None else v) for k, v in flat.items()})

    header = ["run", "status", "metric", "params (M)", "GFLOPs (paper)", "GFLOPs (full)", "s/iter", "wall"]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    for flat in table:
        params = flat.get("params")
        metric_cell = f"{flat['metric']} = {_fmt(flat['value'])}" if flat["value"] is not None else ""
        cells = [
            f"`{flat['name']}`",
            str(flat["status"]),
            metric_cell,
            f"{params / 1e6:.3f}" if isinstance(params, (int, float)) else "",
            _fmt(flat.get("gflops_paper")),
            _fmt(flat.get("gflops_full")),
            _fmt(flat.get("sec_per_iter"), 3),
            _format_duration(flat["wall_s"]) if isinstance(flat.get("wall_s"), (int, float)) else "",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    inputs = sorted({str(flat["flops_input"]) for flat in table if flat.get("flops_input")})
    note = (
        f"\nGFLOPs of one forward pass at {', '.join(inputs)} (paper convention: linear/conv MACs + norms + "
        "rationals; full: + attention and Fourier-KArAt matmuls). s/iter: mean logged training iteration time.\n"
    ) if inputs else "\n"
    md_path.write_text("\n".join(lines) + "\n" + note)
    return csv_path, md_path


# ---------------------------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    """Runs the configs and writes the summary."""
    args = parse_args(argv)
    configs = expand_configs(args.configs)
    names = run_names(configs)
    work_dir = Path(args.work_dir).resolve()
    work_dir.mkdir(parents=True, exist_ok=True)
    interactive = sys.stdout.isatty()
    rows: list[dict[str, Any]] = []
    failed = 0
    total = len(configs)
    print(f"ablate: {total} run{'s' if total != 1 else ''} -> {work_dir}", flush=True)
    session_start = time.perf_counter()
    for index, (config, name) in enumerate(zip(configs, names), start=1):
        run_dir = work_dir / name
        result_path = run_dir / RESULT_FILE
        label = f"[{index}/{total}] {name}:"
        if result_path.is_file() and not args.force:
            row = json.loads(result_path.read_text())
            rows.append(row)
            print(f"{label} done before, skipped ({RESULT_FILE} present)", flush=True)
            continue
        run_dir.mkdir(parents=True, exist_ok=True)
        resume = _has_checkpoint(run_dir) and not args.force
        cmd = train_command(args, config, run_dir, resume)
        row = dict(name=name, config=osp.relpath(config), status="pending", work_dir=str(run_dir))
        if args.dry_run:
            print(f"{label} " + " ".join(cmd), flush=True)
            rows.append(row)
            continue
        print(f"{label} training{' (resuming)' if resume else ''} ... log: {osp.relpath(run_dir / LOG_FILE)}",
              flush=True)
        returncode, wall = run_one(cmd, run_dir / LOG_FILE, label, interactive)
        row.update(wall_s=round(wall, 1), returncode=returncode, command=cmd)
        if returncode != 0:
            failed += 1
            row["status"] = "failed"
            print(f"{label} FAILED (exit code {returncode}) after {_format_duration(wall)}; see "
                  f"{osp.relpath(run_dir / LOG_FILE)}", flush=True)
            rows.append(row)
            write_summary(rows, work_dir, args.metric)
            continue
        row.update(collect_run_logs(run_dir))
        if not args.no_flops:
            try:
                row.update(measure_model(config, args.cfg_options, args.flops_shape))
            except Exception as err:  # a counting problem must not lose the finished run
                row["flops_error"] = f"{type(err).__name__}: {err}"
                print(f"{label} parameter/FLOP count failed: {row['flops_error']}", flush=True)
        row["status"] = "done"
        result_path.write_text(json.dumps(row, indent=2, default=str) + "\n")
        rows.append(row)
        write_summary(rows, work_dir, args.metric)
        metric_name, value = primary_metric(row["metrics"], args.metric)
        elapsed = time.perf_counter() - session_start
        remaining = total - index
        eta = f", ~{_format_duration(elapsed / index * remaining)} left" if remaining else ""
        shown = f"{metric_name}={_fmt(value)}" if value is not None else "no metric logged"
        print(f"{label} done in {_format_duration(wall)}: {shown}{eta}", flush=True)

    csv_path, md_path = write_summary(rows, work_dir, args.metric)
    print(f"ablate: summary -> {osp.relpath(csv_path)}, {osp.relpath(md_path)}")
    print(md_path.read_text())
    if failed:
        print(f"ablate: {failed} of {total} runs failed", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
