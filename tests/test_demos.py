"""The task demos behind `make demo-seg` run end to end (tiny settings) and print their summary line."""

import os
import subprocess
import sys
import time
from pathlib import Path

from kat_backbones.apps.demo import auto_threads, busy_cores

REPO = Path(__file__).resolve().parents[1]
# a bare environment, with this checkout's kat_backbones first (not whichever copy is installed)
DEMO_ENV = {"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO)}


def test_demo_seg_prints_summary(tmp_path):
    proc = subprocess.run(
        [sys.executable, str(REPO / "tools" / "demo_seg.py"), "--data", str(tmp_path / "data"), "--work-dir",
         str(tmp_path / "wd"), "--iters", "4"],
        capture_output=True, text=True, timeout=600, cwd=REPO, env=DEMO_ENV,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    summary = [line for line in proc.stdout.splitlines() if line.startswith("demo-seg: mIoU=")]
    assert len(summary) == 1, proc.stdout[-2000:]
    assert "untrained_mIoU=" in summary[0] and "iters=4" in summary[0]


def test_demo_det_pretrains_trains_and_draws(tmp_path):
    """`make demo` in miniature: demo data, untrained baseline, training, CocoMetric, PNG, summary line."""
    wd = tmp_path / "wd"
    proc = subprocess.run(
        [sys.executable, str(REPO / "tools" / "demo.py"), "--data", str(tmp_path / "data"), "--work-dir", str(wd),
         "--iters", "2", "--num-train", "4", "--num-val", "2", "--threads", "1",
         "--num-images", "2"],
        capture_output=True, text=True, timeout=600, cwd=REPO, env=DEMO_ENV,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    assert "demo: untrained coco/bbox_mAP=" in proc.stdout
    summary = [line for line in proc.stdout.splitlines() if line.startswith("demo: coco/bbox_mAP=")]
    assert len(summary) == 1, proc.stdout[-2000:]
    assert "coco/segm_mAP=" in summary[0] and "untrained_bbox_mAP=" in summary[0]
    png = wd / "predictions.png"
    assert png.is_file() and png.stat().st_size > 1000


def test_demo_auto_threads_follows_current_cpu_use():
    """`make demo` picks its thread count from CPU use now (/proc/stat), not the lagging load average: all cores
    when idle, 1 when other processes keep the cores busy."""
    cores = os.cpu_count() or 1
    busy = busy_cores(0.5)
    assert busy is not None and 0.0 <= busy <= cores + 1e-6
    spinners = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(cores)]
    try:
        time.sleep(0.5)
        assert busy_cores(0.5) >= 0.5 * cores
        assert auto_threads() == 1
    finally:
        for p in spinners:
            p.kill()
            p.wait()
