"""Real GT: official values for GT scored as prediction, and the real annotations of shared/data/scene_text."""
import json

import numpy as np

import pytest

from ests_d2.structures import CharVocabulary
from ests_d2.evaluation.gt_zip import gt_files_from_dataset_dicts
from ests_d2.evaluation.pipeline import load_gt_zip, parse_files, run_evaluation
from ests_d2.evaluation.predictions import ImagePrediction, InstancePrediction
from ests_d2.evaluation.protocol import resolve_runs
from tests.evaluation.eval_helpers import EVAL_GT, SCENE_TEXT, need

# End-to-end H of the official code for GT as prediction (docs/EVALUATION.md, end of step 5)
OFFICIAL_GT_AS_PREDICTION = {"totaltext": 0.9879, "ctw1500": 0.9918, "icdar2015": 0.9990}
SUBSETS = {"totaltext": "totaltext_test", "ctw1500": "ctw1500_test", "icdar2015": "ic15_test"}
VOCAB = CharVocabulary.from_config(97)


def gt_as_predictions(gt):
    return [
        ImagePrediction(int(key), [InstancePrediction(line.points, 0.9, line.text, 1.0) for line in lines])
        for key, lines in gt.items()
    ]


@pytest.mark.parametrize("dataset", sorted(OFFICIAL_GT_AS_PREDICTION))
def test_gt_as_prediction_gives_the_official_values(dataset):
    gt = load_gt_zip(str(need(EVAL_GT / f"gt_{dataset}.zip")))
    res = run_evaluation(gt_as_predictions(gt), gt, resolve_runs(dataset, ["det", "e2e"], []))
    assert res["text_det"] == {"precision": 1.0, "recall": 1.0, "hmean": 1.0}
    assert {round(v, 4) for v in res["text_e2e"].values()} == {OFFICIAL_GT_AS_PREDICTION[dataset]}


def coco_dicts(subset):
    data = json.loads(need(SCENE_TEXT / "coco_text" / f"{subset}.json").read_text())
    by_image = {img["id"]: {"image_id": img["id"], "file_name": img["file_name"], "annotations": []}
                for img in data["images"]}
    for ann in data["annotations"]:
        by_image[ann["image_id"]]["annotations"].append(ann)
    return list(by_image.values())


@pytest.mark.parametrize("dataset", sorted(SUBSETS))
def test_real_annotations_score_perfectly_against_the_subset_zips(dataset):
    """The 16-point polygons sampled from the annotation Beziers, as predictions (data README check)."""
    gt = load_gt_zip(str(need(SCENE_TEXT / "eval_gt_subset" / f"gt_{dataset}.zip")))
    preds = [
        ImagePrediction(d["image_id"], [
            InstancePrediction(
                np.asarray(a["polys"], np.float32).reshape(-1, 2), 0.9,
                "###" if a["iscrowd"] else VOCAB.decode(a["rec"]), 1.0,
            )
            for a in d["annotations"]
        ])
        for d in coco_dicts(SUBSETS[dataset])
    ]
    res = run_evaluation(preds, gt, resolve_runs(dataset, ["det", "e2e"], []))
    assert res["text_det"]["hmean"] == 1.0 and res["text_e2e"]["hmean"] == 1.0


@pytest.mark.parametrize("dataset", sorted(SUBSETS))
def test_gt_derived_from_dataset_dicts_agrees_with_the_official_zip(dataset):
    official = load_gt_zip(str(need(SCENE_TEXT / "eval_gt_subset" / f"gt_{dataset}.zip")))
    derived = parse_files(gt_files_from_dataset_dicts(coco_dicts(SUBSETS[dataset])), "derived")
    assert sorted(derived) == sorted(official)
    assert [[l.text for l in derived[k]] for k in derived] == [[l.text for l in official[k]] for k in derived]
    # the official polygons scored against the derived (Bezier-sampled) GT
    res = run_evaluation(gt_as_predictions(official), derived, resolve_runs(dataset, ["det"], []))
    assert res["text_det"]["hmean"] == 1.0
