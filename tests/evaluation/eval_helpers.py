"""Small builders shared by the evaluation tests: rectangles, predictions, GT files, shared data paths.

The shared folder: ``$ESTS_SHARED_DIR`` if set, else CI's ``<repo>/../shared``, else ``<repo>/../../shared``
(a git worktree under ``<root>/wt/<name>``); tests that need it skip with the reason when it is absent.
"""
import os
from pathlib import Path

import numpy as np
import pytest

from ests_d2.evaluation.pipeline import parse_files, run_evaluation
from ests_d2.evaluation.predictions import ImagePrediction, InstancePrediction
from ests_d2.evaluation.protocol import resolve_settings

REPO_ROOT = Path(__file__).resolve().parents[2]
_CANDIDATES = [Path(os.environ["ESTS_SHARED_DIR"])] if os.environ.get("ESTS_SHARED_DIR") else [
    REPO_ROOT / ".." / "shared", REPO_ROOT / ".." / ".." / "shared",
]
SHARED = next((p for p in _CANDIDATES if p.is_dir()), _CANDIDATES[0]).resolve()
EVAL_GT = SHARED / "data" / "eval_gt"
SCENE_TEXT = SHARED / "data" / "scene_text"


def need(path: Path) -> Path:
    """Skip the test when a shared data file is absent (CI keeps shared/ beside the checkout)."""
    if not path.exists():
        pytest.skip(f"shared data not available: {path}")
    return path


def rect(x0, y0, x1, y1):
    return np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], dtype=np.float32)


def gt_line(points, text):
    return ",".join(f"{int(x)},{int(y)}" for x, y in points) + ",####" + text


def gt_from(lines_by_image):
    """``{image_id: [(points, text), ...]}`` -> parsed GT keyed like an official zip."""
    files = {"{:07d}.txt".format(i): [gt_line(p, t) for p, t in lines] for i, lines in lines_by_image.items()}
    return parse_files(files, "test GT")


def inst(points, text, score=0.9, rec_conf=1.0, rec_prob=None):
    return InstancePrediction(np.asarray(points, np.float32), float(np.float32(score)), text, rec_conf, rec_prob)


def evaluate(images, gt, protocol, task="e2e", lexicon_root=None, **overrides):
    """Metrics of one run; ``images`` is ``{image_id: [InstancePrediction, ...]}``."""
    preds = [ImagePrediction(i, insts) for i, insts in images.items()]
    run = resolve_settings(protocol, task, **overrides)
    return run_evaluation(preds, gt, [run], lexicon_root)[run.run_name]
