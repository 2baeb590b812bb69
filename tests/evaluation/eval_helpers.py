"""Small builders shared by the evaluation tests: rectangles, predictions, GT files, shared data paths."""
from pathlib import Path

import numpy as np
import pytest

from ests_d2.evaluation.pipeline import parse_files, run_evaluation
from ests_d2.evaluation.predictions import ImagePrediction, InstancePrediction
from ests_d2.evaluation.protocol import resolve_settings

SHARED = Path(__file__).resolve().parents[2] / ".." / "shared"
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
