#!/usr/bin/env python
"""Speed of the official-protocol text evaluation on 500 images of predictions (on demand, not a test).

Predictions mimic ESTS output: 100 instances per image (top-100 queries), one near each GT line of the
ICDAR2015 test zip (jittered polygon, 16 points, score 0.25-1, text right or corrupted, peaked rec_prob),
the rest low-score queries. Timed: the no-lexicon runs (task 0 detection + task 1 end-to-end) and the
end-to-end run with the 88,078-word ICDAR2015 generic lexicon (weighted edit distance), lexicon loading
included. Then the command line as a user runs it, each in a fresh interpreter: ``--help``, and a whole
500-image run of ``tools/evaluate_predictions.py`` (read the JSON, task 0 + task 1, per-image CSV), with the
modules of torch / detectron2 it loaded (there must be none).

Usage: PYTHONPATH=. python bench/bench_eval.py [--eval-gt DIR] [--images 500] [--no-lexicon] [--no-cli]
"""
import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from ests_d2.evaluation.pipeline import load_gt_zip, run_evaluation, vocabulary_char_index
from ests_d2.evaluation.predictions import ImagePrediction, InstancePrediction, write_json
from ests_d2.evaluation.protocol import resolve_runs

_REPO = Path(__file__).resolve().parents[1]
# CI keeps shared/ beside the checkout; a git worktree under <root>/wt/<name> sees it two levels up
_CANDIDATES = [_REPO / ".." / "shared" / "data" / "eval_gt", _REPO / ".." / ".." / "shared" / "data" / "eval_gt"]
DEFAULT_EVAL_GT = next((p for p in _CANDIDATES if p.is_dir()), _CANDIDATES[0])
CHAR_INDEX = vocabulary_char_index(97)


def sixteen_points(quad: np.ndarray) -> np.ndarray:
    """16 boundary points (8 per long side) of a 4-point polygon, like the model's output."""
    t = np.linspace(0, 1, 8)[:, None]
    top = quad[0] + t * (quad[1] - quad[0])
    bottom = quad[2] + t * (quad[3] - quad[2])
    return np.concatenate([top, bottom]).astype(np.float32)


def rec_prob_for(text: str, rng) -> np.ndarray:
    logits = rng.normal(0, 1, (max(len(text), 1), 97)).astype(np.float32)
    for j, ch in enumerate(text):
        logits[j, CHAR_INDEX.get(ch, 95)] += rng.uniform(4, 12)
    p = np.exp(logits - logits.max(1, keepdims=True))
    return (p / p.sum(1, keepdims=True)).astype(np.float32)[: len(text)]


def make_predictions(gt, n_images: int, rng):
    images = []
    for key in sorted(gt, key=int)[:n_images]:
        insts = []
        for line in gt[key]:
            pts = sixteen_points(line.points.astype(np.float64) + rng.uniform(-2, 2, line.points.shape))
            text = line.text if line.text != "###" else "".join(rng.choice(list("ABCDEFGH"), 4))
            if rng.random() < 0.3 and len(text) > 1:
                text = text[:-1] + str(rng.choice(list("XYZ0")))
            text = "".join(c for c in text.upper() if c in CHAR_INDEX)[:25]
            score = float(np.float32(rng.uniform(0.25, 1.0)))
            insts.append(InstancePrediction(pts, score, text, 0.99, rec_prob_for(text, rng)))
        while len(insts) < 100:
            x, y = rng.uniform(0, 1200), rng.uniform(0, 680)
            quad = np.array([[x, y], [x + 60, y], [x + 60, y + 20], [x, y + 20]])
            score = float(np.float32(rng.uniform(0.1, 0.3) if rng.random() < 0.05 else rng.uniform(0, 0.1)))
            insts.append(InstancePrediction(sixteen_points(quad), score, "JUNK", 0.5, rec_prob_for("JUNK", rng)))
        images.append(ImagePrediction(int(key), insts))
    return images


def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


_HEAVY_CHECK = (
    "import runpy, sys\n"
    "sys.argv = sys.argv[1:]\n"
    "try:\n    runpy.run_path(sys.argv[0], run_name='__main__')\nexcept SystemExit:\n    pass\n"
    "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'torchvision', 'detectron2')), "
    "file=sys.stderr)\n"
)


def _children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def time_cli(images, gt_zip: str) -> dict:
    """Wall seconds of ``--help`` and of a whole CLI run (fresh interpreters), and what they imported."""
    tool = str(_REPO / "tools" / "evaluate_predictions.py")
    env = dict(os.environ, PYTHONPATH=str(_REPO))
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        preds = os.path.join(tmp, "preds.json")
        # rec_prob rows are only read by the IC15 lexicons; the no-lexicon run does not need them
        write_json(preds, "ic15", [ImagePrediction(im.image_id, [
            InstancePrediction(p.polygon, p.score, p.text, p.rec_conf) for p in im.instances]) for im in images])
        out["cli_json_mb"] = round(os.path.getsize(preds) / 2**20, 1)
        for name, argv in [
            ("cli_help_s", [tool, "--help"]),
            ("cli_500_images_s", [tool, preds, "--gt-zip", gt_zip, "--quiet", "--json",
                                  "--per-image", os.path.join(tmp, "per_image.csv")]),
        ]:
            t0, cpu0 = time.perf_counter(), _children_cpu_s()
            done = subprocess.run([sys.executable, "-c", _HEAVY_CHECK] + argv, env=env, capture_output=True,
                                  text=True, check=True)
            out[name] = round(time.perf_counter() - t0, 2)
            # CPU seconds too: on a shared machine the wall time mostly measures the other jobs
            out[name.replace("_s", "_cpu_s")] = round(_children_cpu_s() - cpu0, 2)
            out[name.replace("_s", "_heavy_modules")] = done.stderr.strip().splitlines()[-1]
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--eval-gt", default=str(DEFAULT_EVAL_GT), help="folder with gt_icdar2015.zip and lexicons/")
    ap.add_argument("--images", type=int, default=500)
    ap.add_argument("--no-lexicon", action="store_true", help="skip the generic-lexicon run")
    ap.add_argument("--no-cli", action="store_true", help="skip the command-line timings")
    args = ap.parse_args()
    gt_zip = os.path.join(args.eval_gt, "gt_icdar2015.zip")
    if not os.path.isfile(gt_zip):
        raise SystemExit(f"{gt_zip} not found (shared data); pass --eval-gt")
    gt = load_gt_zip(gt_zip)
    images = make_predictions(gt, args.images, np.random.default_rng(0))
    gt = {k: v for k, v in gt.items() if int(k) in {im.image_id for im in images}}
    n_inst = sum(len(im.instances) for im in images)
    report = {
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, {platform.platform()}",
        "images": len(images),
        "instances": n_inst,
    }
    res, secs = timed(lambda: run_evaluation(images, gt, resolve_runs("icdar2015", ["det", "e2e"], [])))
    report["no_lexicon_det_and_e2e_s"] = round(secs, 2)
    report["no_lexicon_results"] = res
    if not args.no_lexicon:
        root = os.path.join(args.eval_gt, "lexicons")
        runs = resolve_runs("icdar2015", [], ["generic"])
        res, secs = timed(lambda: run_evaluation(images, gt, runs, root))
        report["generic_lexicon_e2e_s"] = round(secs, 2)
        report["generic_lexicon_queries"] = sum(
            1 for im in images for p in im.instances if round(p.score, 3) >= runs[0].det_threshold
        )
        report["generic_lexicon_results"] = res
    if not args.no_cli:
        report.update(time_cli(images, gt_zip))
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
