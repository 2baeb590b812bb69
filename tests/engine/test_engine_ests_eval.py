"""The real evaluation path on the real (tiny) ESTS with the shipped ``icdar2015_samples``.

``tools/train_net.py --eval-only`` goes through ``Trainer.build_test_loader`` (``build_test_mapper``),
the model's inference and ``Trainer.build_evaluator``'s text branch; a training run with
``TEST.EVAL_PERIOD > 0`` goes through the evaluation hook, which must keep evaluation off the training
RNG streams, and must still resume bitwise. Images are shrunk to ~100 px so that each test stays short.
"""
import json
import os
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.data import DatasetCatalog
from detectron2.data import detection_utils as utils
from detectron2.data import transforms as T
from detectron2.engine import hooks
from detectron2.utils.env import seed_all_rng

import ests_d2.modeling  # noqa: F401  (registers the ESTS meta-architecture)
from ests_d2.config import load_ests_config
from ests_d2.data.datasets import ICDAR2015_SAMPLES_DIR
from ests_d2.engine import Trainer
from ests_d2.evaluation.text_evaluator import TextSpottingEvaluator
from tests.engine.tiny_engine import SimulatedCrash, StopAfter

REPO = Path(__file__).resolve().parents[2]
CONFIG = REPO / "configs" / "ESTS" / "Synthetic-Tiny.yaml"
DATASET = "icdar2015_samples"
SMALL_MODEL = [
    "MODEL.DEVICE", "cpu", "MODEL.ESTS.NUM_QUERIES", "10", "MODEL.ESTS.NUM_SELECT", "10",
    "MODEL.ESTS.DN.NUMBER", "2", "MODEL.ESTS.ENC_LAYERS", "1", "MODEL.ESTS.DEC_LAYERS", "2",
    "DATASETS.TEST", f"('{DATASET}',)", "DATALOADER.NUM_WORKERS", "0",
]
# 1280 x 720 -> short side 96 would make it 171 wide, over 160: scaled to 160 x 90 instead
TEST_SIZE = ["INPUT.MIN_SIZE_TEST", "96", "INPUT.MAX_SIZE_TEST", "160"]


def _inference_here(cfg, weights):
    """image_id -> Instances, inferred outside the trainer: the test-time resize is done here with
    detectron2's transform and the results are asked for at the original 1280 x 720."""
    model = Trainer.build_model(cfg)
    DetectionCheckpointer(model).load(weights)
    model.eval()
    results = {}
    for d in DatasetCatalog.get(DATASET):
        image = utils.read_image(d["file_name"], format="RGB")
        assert image.shape[:2] == (720, 1280)
        resized = T.ResizeShortestEdge(96, 160).get_transform(image).apply_image(image)
        assert resized.shape[:2] == (90, 160)
        inputs = {"image": torch.as_tensor(resized.transpose(2, 0, 1).copy()), "height": 720, "width": 1280}
        with torch.no_grad():
            results[d["image_id"]] = model([inputs])[0]["instances"]
    return results


@pytest.mark.slow
def test_eval_only_on_the_real_model_and_the_shipped_samples(tmp_path):
    opts = SMALL_MODEL + TEST_SIZE + ["OUTPUT_DIR", str(tmp_path / "out")]
    cfg = load_ests_config(str(CONFIG), opts)
    torch.manual_seed(0)
    DetectionCheckpointer(Trainer.build_model(cfg), save_dir=str(tmp_path)).save("weights")
    weights = str(tmp_path / "weights.pth")

    result = subprocess.run(
        [sys.executable, str(REPO / "tools" / "train_net.py"), "--config-file", str(CONFIG), "--eval-only",
         *opts, "MODEL.WEIGHTS", weights],
        cwd=tmp_path, env=dict(os.environ, PYTHONPATH=str(REPO)), capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]

    folder = tmp_path / "out" / "inference" / DATASET
    report = json.loads((folder / "text_results.json").read_text())
    assert report["dataset"] == DATASET
    assert report["gt"] == str(ICDAR2015_SAMPLES_DIR / "gt_icdar2015_samples.zip")  # the shipped official GT
    assert [(run["settings"]["protocol"], run["settings"]["task"]) for run in report["runs"]] == [
        ("icdar2015", "det"), ("icdar2015", "e2e")]
    written = json.loads((folder / "text_predictions.json").read_text())["images"]
    written = {im["image_id"]: np.array([p["polygon"] for p in im["instances"]]) for im in written}

    here = _inference_here(cfg, weights)
    assert sorted(written) == sorted(here) == [1, 10, 11, 52, 195]
    for image_id, instances in here.items():
        # the test mapper resized deterministically and the results came back at 1280 x 720
        assert written[image_id].shape == (10, 16, 2)
        np.testing.assert_allclose(written[image_id].reshape(10, 32), instances.polygons.numpy(), atol=1e-3,
                                   err_msg=f"image {image_id}")
    assert max(float(p[:, :, 0].max()) for p in written.values()) > 160  # not left at the input size

    # the trainer's evaluator scores as one built here with the official defaults
    evaluator = TextSpottingEvaluator(DATASET, distributed=False, output_dir=str(tmp_path / "here"))
    evaluator.reset()
    evaluator.process([{"image_id": i} for i in here], [{"instances": inst} for inst in here.values()])
    scores_here = evaluator.evaluate()
    for run in report["runs"]:
        name = f"text_{run['settings']['task']}"
        assert set(run["metrics"]) == {"precision", "recall", "hmean"}
        assert scores_here[name] == pytest.approx(run["metrics"]), name


# ------------------------------------------------------------------------------------------ periodic evaluation
def _train_cfg(output_dir):
    opts = SMALL_MODEL + [
        "DATASETS.TRAIN", f"('{DATASET}',)", "INPUT.MIN_SIZE_TRAIN", "(64, 80)", "INPUT.MAX_SIZE_TRAIN", "160",
        "INPUT.MIN_SIZE_TEST", "64", "INPUT.MAX_SIZE_TEST", "128", "TEST.EVAL_PERIOD", "1",
        "SOLVER.IMS_PER_BATCH", "1", "SOLVER.MAX_ITER", "2", "SOLVER.STEPS", "()", "SOLVER.CHECKPOINT_PERIOD", "1",
        "SOLVER.LOG_PERIOD", "1", "OUTPUT_DIR", str(output_dir),
    ]
    return load_ests_config(str(CONFIG), opts)


def _rng_states():
    return random.getstate(), np.random.get_state(), torch.get_rng_state()


def _same_rng(a, b):
    return a[0] == b[0] and all(np.array_equal(x, y) for x, y in zip(a[1], b[1])) and torch.equal(a[2], b[2])


def _train(cfg, resume=False, stop_after=None):
    """One life of a run; returns the trainer and, per evaluation, (iteration, RNG untouched?)."""
    seed_all_rng(cfg.SEED)
    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=resume)
    (eval_hook,) = [h for h in trainer._hooks if isinstance(h, hooks.EvalHook)]
    evaluate, evaluations = eval_hook._func, []

    def watched_evaluation():
        before = _rng_states()
        results = evaluate()
        evaluations.append((trainer.iter, _same_rng(before, _rng_states())))
        return results

    eval_hook._func = watched_evaluation
    if stop_after is None:
        trainer.train()
    else:
        trainer.register_hooks([StopAfter(stop_after)])
        with pytest.raises(SimulatedCrash):
            trainer.train()
    return trainer, evaluations


def _logged(output_dir):
    """iteration -> everything metrics.json holds for it except timings and memory."""
    logged = {}
    for line in (output_dir / "metrics.json").read_text().splitlines():
        row = json.loads(line)
        logged.setdefault(row.pop("iteration"), {}).update(row)
    volatile = ("time", "data_time", "eta_seconds", "rss_mb")
    return {i: {k: v for k, v in row.items() if k not in volatile} for i, row in logged.items()}


@pytest.mark.slow
def test_run_with_periodic_evaluation_resumes_bitwise(tmp_path):
    full, full_evaluations = _train(_train_cfg(tmp_path / "full"))
    _, first_life = _train(_train_cfg(tmp_path / "cut"), stop_after=0)
    resumed, second_life = _train(_train_cfg(tmp_path / "cut"), resume=True)

    # evaluated after iteration 0 and after training (where trainer.iter == MAX_ITER), each time without
    # moving the RNG streams that training continues with
    assert full_evaluations == [(0, True), (2, True)]
    assert first_life == [(0, True)] and second_life == [(2, True)]
    assert resumed.start_iter == 1
    for k, v in full.model.state_dict().items():
        assert torch.equal(v, resumed.model.state_dict()[k]), k
    logged = _logged(tmp_path / "full")
    assert "loss_ce" in logged[0] and "loss_ce" in logged[1]
    assert "text_det/hmean" in logged[0] and "text_e2e/hmean" in logged[max(logged)]
    assert _logged(tmp_path / "cut") == logged  # losses and evaluation results
