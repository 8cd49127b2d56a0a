"""The task demos behind `make demo-seg` run end to end (tiny settings) and print their summary line."""

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_demo_seg_prints_summary(tmp_path):
    proc = subprocess.run(
        [sys.executable, str(REPO / "tools" / "demo_seg.py"), "--data", str(tmp_path / "data"), "--work-dir",
         str(tmp_path / "wd"), "--iters", "4"],
        capture_output=True, text=True, timeout=600, cwd=REPO, env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"},
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    summary = [line for line in proc.stdout.splitlines() if line.startswith("demo-seg: mIoU=")]
    assert len(summary) == 1, proc.stdout[-2000:]
    assert "untrained_mIoU=" in summary[0] and "iters=4" in summary[0]
