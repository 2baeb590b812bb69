"""Plots of a training run's ``metrics.json`` (detectron2's JSONWriter output: one JSON object per line)."""
import json
import logging
import math
import os
from collections import defaultdict
from typing import Dict, List, Tuple

import matplotlib

matplotlib.use("Agg")  # tools run headless
import matplotlib.pyplot as plt  # noqa: E402

logger = logging.getLogger(__name__)

Series = Dict[str, List[Tuple[int, float]]]

# Which panel a metric belongs to. Evaluation results are flattened by detectron2 as "task/metric".
PANELS = {
    "losses": lambda k: k == "total_loss" or (k.startswith("loss_") and not k[-1].isdigit() and "_dn" not in k),
    "learning_rate": lambda k: k == "lr" or k.startswith("lr_"),
    "memory": lambda k: "mem" in k or "rss" in k,
    "evaluation": lambda k: "/" in k,
    # the engine's gradient norm and its skip / overflow / OOM counters: is training healthy?
    "health": lambda k: k == "grad_norm" or k.endswith(("_skips", "_overflows", "_retries")),
    "speed": lambda k: k in ("time", "data_time"),
}


def read_metrics(path: str) -> Series:
    """All numeric series of a metrics.json, keyed by name, as (iteration, value) lists.

    Lines that are not valid JSON (a run killed while writing) are counted and skipped. A value logged
    at or before an iteration its metric already has (a run resumed from an earlier checkpoint by an
    engine that did not truncate the file, or restarted in the same folder) replaces the earlier
    values from that iteration on, so each metric reads as one curve.
    """
    series: Series = defaultdict(list)
    bad = replaced = 0
    with open(path) as f:
        for line_no, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                bad += 1
                continue
            if "iteration" not in record:
                raise ValueError(f"{path}:{line_no}: a metrics record without 'iteration'")
            it = int(record["iteration"])
            for key, value in record.items():
                if key != "iteration" and isinstance(value, (int, float)) and math.isfinite(value):
                    points = series[key]
                    if points and points[-1][0] >= it:
                        kept = [p for p in points if p[0] < it]
                        replaced += len(points) - len(kept)
                        points[:] = kept
                    points.append((it, float(value)))
    if bad:
        logger.warning("%s: skipped %d unreadable line(s) (e.g. a run killed mid-write)", path, bad)
    if replaced:
        logger.warning("%s: %d value(s) were logged again by a resumed run; the later ones are drawn", path, replaced)
    return dict(series)


def plot_metrics(metrics_json: str, output_dir: str, dpi: int = 100) -> List[str]:
    """Write one PNG per panel (losses, learning rate, memory, evaluation, health, speed) that has data;
    return their paths."""
    series = read_metrics(metrics_json)
    if not series:
        raise ValueError(f"{metrics_json}: no numeric metrics found")
    os.makedirs(output_dir, exist_ok=True)
    written = []
    for panel, belongs in PANELS.items():
        keys = sorted(k for k in series if belongs(k))
        if not keys:
            continue
        fig, ax = plt.subplots(figsize=(8, 4.5))
        for key in keys:
            its, values = zip(*series[key])
            style = "o-" if len(its) < 20 else "-"
            ax.plot(its, values, style, label=key, linewidth=2 if key == "total_loss" else 1)
        if panel == "losses" and all(v > 0 for k in keys for _, v in series[k]):
            ax.set_yscale("log")
        ax.set_xlabel("iteration")
        run_name = os.path.basename(os.path.dirname(os.path.abspath(metrics_json)))
        ax.set_title(f"{panel.replace('_', ' ')} — {run_name}")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, ncol=2 if len(keys) > 8 else 1)
        path = os.path.join(output_dir, f"{panel}.png")
        fig.tight_layout()
        fig.savefig(path, dpi=dpi)
        plt.close(fig)
        written.append(path)
    return written
