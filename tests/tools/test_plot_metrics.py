"""tools/plot_metrics.py turns a metrics.json into readable, non-blank PNGs."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from ests_d2.utils.metrics_plot import read_metrics

REPO = Path(__file__).resolve().parents[2]
ENV = dict(os.environ, PYTHONPATH=str(REPO))  # this checkout's ests_d2, not another installed copy


def write_run(folder: Path) -> Path:
    lines = []
    for it in range(0, 100, 10):
        lines.append(
            {"iteration": it, "total_loss": 200.0 / (it + 1), "loss_ce": 1.0 / (it + 1), "loss_rec": 3.0 - it / 50,
             "loss_ce_0": 9.0, "lr": 1e-4 if it < 60 else 1e-5, "peak_rss_mb": 1000.0 + it, "grad_norm": 1.0 + it % 3,
             "nonfinite_skips": float(it > 50)}
        )
    lines.append({"iteration": 99, "text_det/hmean": 0.4, "text_e2e/hmean": 0.2})
    path = folder / "metrics.json"
    path.write_text("\n".join(json.dumps(x) for x in lines) + '\n{"iteration": 100, "total_lo')  # killed mid-write
    return path


def test_read_metrics_skips_a_truncated_line(tmp_path):
    series = read_metrics(str(write_run(tmp_path)))
    assert [it for it, _ in series["total_loss"]] == list(range(0, 100, 10))
    assert series["text_e2e/hmean"] == [(99, 0.2)]


def test_plot_metrics_tool_writes_one_png_per_panel(tmp_path):
    write_run(tmp_path)
    out = tmp_path / "plots"
    result = subprocess.run(
        [sys.executable, str(REPO / "tools" / "plot_metrics.py"), str(tmp_path), "--output", str(out)],
        capture_output=True, text=True, cwd=REPO, env=ENV,
    )
    assert result.returncode == 0, result.stderr
    names = sorted(Path(p).name for p in result.stdout.split())
    assert names == ["evaluation.png", "health.png", "learning_rate.png", "losses.png", "memory.png"]
    for name in names:
        image = np.asarray(Image.open(out / name).convert("L"))
        assert image.shape == (450, 800)  # 8 x 4.5 inches at 100 dpi
        assert image.std() > 5, f"{name} looks blank"


def test_plot_metrics_tool_rejects_a_missing_file(tmp_path):
    result = subprocess.run(
        [sys.executable, str(REPO / "tools" / "plot_metrics.py"), str(tmp_path / "nope.json")],
        capture_output=True, text=True, cwd=REPO, env=ENV,
    )
    assert result.returncode != 0
    assert "nope.json does not exist" in result.stderr


def test_a_resumed_run_logged_twice_draws_one_curve(tmp_path):
    """metrics.json of a run resumed by an engine that appended: iterations 5-7 are logged again."""
    first = [{"iteration": it, "total_loss": 10.0 - it, "lr": 0.1} for it in range(8)]
    resumed = [{"iteration": it, "total_loss": 20.0 - it} for it in range(5, 12)]
    (tmp_path / "metrics.json").write_text("\n".join(json.dumps(x) for x in first + resumed) + "\n")

    series = read_metrics(str(tmp_path / "metrics.json"))
    assert series["total_loss"] == [(it, 10.0 - it) for it in range(5)] + [(it, 20.0 - it) for it in range(5, 12)]
    assert series["lr"] == [(it, 0.1) for it in range(8)]  # not logged again: kept
    result = subprocess.run(
        [sys.executable, str(REPO / "tools" / "plot_metrics.py"), str(tmp_path), "--output", str(tmp_path / "p")],
        capture_output=True, text=True, cwd=REPO, env=ENV,
    )
    assert result.returncode == 0, result.stderr
    assert "3 value(s) were logged again by a resumed run" in result.stderr
