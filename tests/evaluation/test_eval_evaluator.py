"""TextSpottingEvaluator on a tiny Instances fixture, its config wiring, and the evaluate_predictions CLI."""
import importlib.util
import json
import zipfile

import numpy as np
import pytest
import torch
from detectron2.config import get_cfg
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.structures import Instances

from ests_d2.config import add_ests_config
from ests_d2.structures import CharVocabulary, bezier_to_polygon
from ests_d2.evaluation import TextSpottingEvaluator
from tests.evaluation.eval_helpers import REPO_ROOT


def _load_cli():
    """tools/ is not a package (and a site-packages 'tools' may shadow it): load the script by path."""
    path = REPO_ROOT / "tools" / "evaluate_predictions.py"
    spec = importlib.util.spec_from_file_location("evaluate_predictions", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


evaluate_predictions = _load_cli()

VOCAB = CharVocabulary.from_config(97)
# two words and a don't-care region; Bezier control points: top curve L->R, bottom curve R->L
WORDS = [("HELLO", [10, 10, 40, 10, 70, 10, 100, 10, 100, 40, 70, 40, 40, 40, 10, 40], 0),
         ("World", [10, 60, 50, 60, 90, 60, 130, 60, 130, 90, 90, 90, 50, 90, 10, 90], 0),
         ("###", [200, 10, 230, 10, 260, 10, 290, 10, 290, 40, 260, 40, 230, 40, 200, 40], 1)]


@pytest.fixture
def dataset():
    name = "ests_eval_test_tiny"
    dicts = [{
        "file_name": "tiny.jpg", "image_id": 3, "height": 120, "width": 320,
        "annotations": [{"beziers": b, "rec": VOCAB.encode(t, 25), "iscrowd": c} for t, b, c in WORDS],
    }]
    DatasetCatalog.register(name, lambda: dicts)
    MetadataCatalog.get(name).set(evaluator_type="text", eval_protocol="generic", voc_size=97)
    yield name
    DatasetCatalog.remove(name)
    MetadataCatalog.remove(name)


def model_output(texts, scores, rec_scores):
    """Instances as the model returns them (docs/ARCHITECTURE.md), one per entry of WORDS."""
    n = len(texts)
    beziers = torch.tensor([b for _, b, _ in WORDS[:n]], dtype=torch.float32).reshape(n, 16)
    rec = torch.tensor([VOCAB.encode(t, 25) for t in texts], dtype=torch.int64).reshape(n, 25)
    probs = torch.nn.functional.one_hot(rec, 97).float() * 0.9 + 0.1 / 97
    inst = Instances((120, 320))
    inst.scores = torch.tensor(scores, dtype=torch.float32)
    inst.polygons = bezier_to_polygon(beziers).float()
    inst.rec = rec
    inst.rec_scores = torch.tensor(rec_scores, dtype=torch.float32).reshape(n, 25)
    inst.rec_probs = probs
    inst.texts = texts
    return [{"instances": inst}]


def run(evaluator, outputs):
    evaluator.reset()
    evaluator.process([{"image_id": 3, "height": 120, "width": 320}], outputs)
    return evaluator.evaluate()


def test_evaluator_scores_model_outputs_and_writes_both_formats(dataset, tmp_path, capsys):
    ev = TextSpottingEvaluator(dataset, distributed=False, output_dir=str(tmp_path), rec_confidence=0.95)
    # HELLO correct and confident; "W0rld" wrong; its rec_scores mean over 25 slots (padding included)
    # is (5 * 1.0 + 20 * 0.9) / 25 = 0.92 < 0.95, so the e2e run drops it: e2e P = 1/1, R = 1/2.
    rec_scores = [[0.99] * 25, [1.0] * 5 + [0.9] * 20]
    res = run(ev, model_output(["HELLO", "W0rld"], [0.9, 0.8], rec_scores))
    assert res["text_det"] == {"precision": 1.0, "recall": 1.0, "hmean": 1.0}
    assert res["text_e2e"] == pytest.approx({"precision": 1.0, "recall": 0.5, "hmean": 2 / 3})
    for name in ["text_predictions.json", "text_det_det.zip", "text_e2e_det.zip", "gt_derived.zip",
                 "text_results.json"]:
        assert (tmp_path / name).is_file(), name
    with zipfile.ZipFile(tmp_path / "text_e2e_det.zip") as z:
        assert z.namelist() == ["0000003.txt"]
        assert z.read("0000003.txt").decode().endswith(",####HELLO\n")
    neutral = json.loads((tmp_path / "text_predictions.json").read_text())
    assert neutral["format"] == "ests-eval-predictions/v1" and len(neutral["images"][0]["instances"]) == 2

    # the CLI on what the evaluator wrote gives the same numbers, from the JSON and from the zip as given
    task0, task1 = cli_blocks(capsys, tmp_path / "text_predictions.json", "--rec-confidence", "0.95")
    assert metrics(task0["detection"]) == res["text_det"] and metrics(task1["end_to_end"]) == res["text_e2e"]
    (as_given,) = cli_blocks(capsys, tmp_path / "text_e2e_det.zip", "--dataset", "generic")
    assert metrics(as_given["end_to_end"]) == res["text_e2e"]


def cli_blocks(capsys, predictions, *options):
    """The blocks of each run of ``tools/evaluate_predictions.py --json`` on the derived GT."""
    code = evaluate_predictions.main([str(predictions), "--gt-zip", str(predictions.parent / "gt_derived.zip"),
                                      "--quiet", "--json", *options])
    assert code == 0
    return [r["blocks"] for r in json.loads(capsys.readouterr().out)["runs"]]


def metrics(block):
    return {k: block[k] for k in ("precision", "recall", "hmean")}


def test_evaluator_from_config(dataset, tmp_path):
    cfg = get_cfg()
    add_ests_config(cfg)
    cfg.OUTPUT_DIR = str(tmp_path)
    cfg.TEST.TEXT.TASKS = ["e2e"]
    cfg.TEST.TEXT.DET_THRESHOLD = 0.85  # drops the 0.8 "World" detection
    cfg.TEST.TEXT.REC_CONFIDENCE = 0.0
    ev = TextSpottingEvaluator(cfg, dataset, distributed=False)
    res = run(ev, model_output(["HELLO", "World"], [0.9, 0.8], [[0.99] * 25] * 2))
    assert list(res) == ["text_e2e"]
    assert res["text_e2e"] == pytest.approx({"precision": 1.0, "recall": 0.5, "hmean": 2 / 3})
    assert (tmp_path / "inference" / dataset / "text_results.json").is_file()
    # the keyword form the trainer uses builds the same evaluator
    ev = TextSpottingEvaluator(cfg, dataset, distributed=False, output_dir=str(tmp_path / "other"))
    assert run(ev, model_output(["HELLO", "World"], [0.9, 0.8], [[0.99] * 25] * 2)) == res
    assert (tmp_path / "other" / "text_results.json").is_file()


def test_evaluator_rejects_unknown_lexicon(dataset):
    with pytest.raises(ValueError, match="generic has no 'strong' lexicon"):
        TextSpottingEvaluator(dataset, lexicons=["strong"], distributed=False)


def test_no_detections_gives_zero_precision(dataset):
    res = run(TextSpottingEvaluator(dataset, distributed=False), model_output([], [], np.zeros((0, 25))))
    assert res["text_det"] == {"precision": 0.0, "recall": 0.0, "hmean": 0.0}
