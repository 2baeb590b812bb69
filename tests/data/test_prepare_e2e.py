"""Register and go, end to end on the shipped ICDAR2015 samples: prepare them from their native txt with the
command line, then train 2 iterations of the tiny config on the prepared dataset by name and evaluate it."""
import json
import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SAMPLES = REPO / "datasets" / "icdar2015_samples"
# Small sizes and few denoising groups: the point is the pipeline, not the numbers (CI has 2 CPU cores).
FAST = ("INPUT.MIN_SIZE_TRAIN", "(128,)", "INPUT.MAX_SIZE_TRAIN", "224", "INPUT.MIN_SIZE_TEST", "128",
        "INPUT.MAX_SIZE_TEST", "224", "MODEL.ESTS.DN.NUMBER", "2", "DATALOADER.NUM_WORKERS", "0")


def _run(args, datasets_root):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
               DETECTRON2_DATASETS=str(datasets_root))
    proc = subprocess.run([sys.executable, *map(str, args)], env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout + proc.stderr


@pytest.mark.slow
def test_prepare_train_evaluate_on_the_icdar2015_samples(tmp_path):
    root = tmp_path / "datasets"
    out = root / "my_ic15"
    log = _run([REPO / "tools" / "prepare_dataset.py", "icdar2015", "--images", SAMPLES / "images",
                "--annotations", SAMPLES / "gt_native", "--out", out, "--name", "my_ic15", "--eval-gt"], root)
    assert "instances             41 (16 don't care)" in log

    # The prepared labels are the shipped ones (converted from the same native files by the reference tool).
    mine = json.loads((out / "my_ic15.json").read_text(encoding="utf-8"))
    shipped = json.loads((SAMPLES / "ic15_samples.json").read_text(encoding="utf-8"))
    keys = ("image_id", "iscrowd", "rec", "segmentation", "bbox")
    assert [[a[k] for k in keys] for a in mine["annotations"]] == \
        [[a[k] for k in keys] for a in sorted(shipped["annotations"], key=lambda a: (a["image_id"], a["id"]))]
    with zipfile.ZipFile(out / "gt_my_ic15.zip") as a, zipfile.ZipFile(SAMPLES / "gt_icdar2015_samples.zip") as b:
        assert {n: a.read(n) for n in a.namelist()} == {n: b.read(n) for n in b.namelist()}

    # Train by name (registered from the manifest under $DETECTRON2_DATASETS) and evaluate at the end.
    log = _run([REPO / "tools" / "train_net.py", "--config-file", REPO / "configs" / "ESTS" / "Synthetic-Tiny.yaml",
                "DATASETS.TRAIN", '("my_ic15",)', "DATASETS.TEST", '("my_ic15",)', "SOLVER.MAX_ITER", "2",
                "OUTPUT_DIR", tmp_path / "output", *FAST], root)
    assert re.search(r"\|\s*text\s*\|\s*25\s", log)  # detectron2's histogram: the 25 words that are not ###
    assert (tmp_path / "output" / "model_final.pth").is_file()
    assert "Evaluation results for my_ic15" in log and "copypaste: Task: text_e2e" in log
    results = json.loads((tmp_path / "output" / "inference" / "my_ic15" / "text_results.json").read_text())
    assert results["gt"] == str(out / "gt_my_ic15.zip")  # scored against the prepared GT zip...
    assert {run["settings"]["protocol"] for run in results["runs"]} == {"icdar2015"}  # ...with its protocol
