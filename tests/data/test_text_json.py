"""COCO-text loading: faithful on the real images, one test per class of bad input."""
import json
import logging

import cv2
import numpy as np
import pytest
from detectron2.structures import BoxMode

from ests_d2.data.text_json import TextAnnotationError, load_text_json
from ests_d2.structures import bezier_to_polygon
from tests.data.data_helpers import assert_names_file_and_annotation, scene_text_dir, write_text_dataset

SUBSETS = ("ic15_train", "ic15_test", "totaltext_test", "ctw1500_test")

# bezier_pts and polys are both stored with 2 decimals. Sampling uses Bernstein weights that sum to 1,
# so control-point rounding moves a sampled point by at most 0.005 px, and the stored polys add another
# 0.005 px of rounding: |sampled - polys| <= 0.01 px (+ float noise).
POLYS_TOLERANCE = 0.0101


def _load_subset(subset):
    root = scene_text_dir()
    return load_text_json(str(root / "coco_text" / f"{subset}.json"), str(root / "images" / subset), subset)


@pytest.mark.parametrize("subset", SUBSETS)
def test_real_annotations_load_faithfully(subset):
    dicts = _load_subset(subset)
    with open(scene_text_dir() / "coco_text" / f"{subset}.json", encoding="utf-8") as f:
        raw = json.load(f)
    assert len(dicts) == len(raw["images"])
    assert sum(len(d["annotations"]) for d in dicts) == len(raw["annotations"])  # nothing skipped
    raw_by_id = {a["id"]: a for a in raw["annotations"]}
    for d in dicts:
        image = cv2.imread(d["file_name"])
        assert image.shape[:2] == (d["height"], d["width"])
        for ann in d["annotations"]:
            assert ann["bbox_mode"] == BoxMode.XYXY_ABS and ann["category_id"] == 0
            assert len(ann["beziers"]) == 16 and len(ann["rec"]) == 25
            sampled = bezier_to_polygon(np.asarray(ann["beziers"]))
            np.testing.assert_allclose(sampled, ann["polys"], atol=POLYS_TOLERANCE, rtol=0)
            x0, y0, x1, y1 = ann["bbox"]
            assert 0 <= x0 < x1 <= d["width"] and 0 <= y0 < y1 <= d["height"]
    # rec and iscrowd are carried over unchanged (matched through the polygon, which is unique per image)
    for d in dicts:
        for ann in d["annotations"]:
            match = [a for a in raw_by_id.values()
                     if a["image_id"] == d["image_id"] and a["bezier_pts"] == ann["beziers"]]
            assert len(match) == 1
            assert ann["rec"] == match[0]["rec"][:25] and ann["iscrowd"] == match[0]["iscrowd"]


def test_all_dont_care_image_is_kept_by_the_loader():
    dicts = {d["image_id"]: d for d in _load_subset("ic15_test")}
    img_1 = dicts[1]  # only '###' words
    assert img_1["annotations"] and all(a["iscrowd"] == 1 for a in img_1["annotations"])


# ---------------------------------------------------------------- bad input, one test per class


def test_valid_dataset_loads(tmp_path):
    dicts = load_text_json(write_text_dataset(tmp_path), str(tmp_path))
    assert [len(d["annotations"]) for d in dicts] == [2]
    assert dicts[0]["annotations"][0]["bbox"] == [10.0, 10.0, 100.0, 40.0]


def test_wrong_bezier_length_raises(tmp_path):
    json_file = write_text_dataset(tmp_path, lambda c: c["annotations"][0].update(bezier_pts=[1.0] * 14))
    with pytest.raises(TextAnnotationError, match="bezier_pts has 14 values, expected 16") as e:
        load_text_json(json_file, str(tmp_path))
    assert_names_file_and_annotation(str(e.value), json_file)


def test_rec_outside_vocabulary_raises(tmp_path):
    json_file = write_text_dataset(tmp_path, lambda c: c["annotations"][0].update(rec=[33, 97] + [96] * 23))
    with pytest.raises(TextAnnotationError, match=r"rec ids \[97\] are outside the vocabulary") as e:
        load_text_json(json_file, str(tmp_path))
    assert_names_file_and_annotation(str(e.value), json_file)
    # the same ids are fine for a larger vocabulary
    assert load_text_json(json_file, str(tmp_path), voc_size=107)


def test_missing_image_raises(tmp_path):
    json_file = write_text_dataset(tmp_path)
    (tmp_path / "a.jpg").unlink()
    with pytest.raises(TextAnnotationError, match="1 of 1 image files are missing") as e:
        load_text_json(json_file, str(tmp_path))
    assert json_file in str(e.value) and "a.jpg" in str(e.value)


def test_non_positive_box_is_skipped_and_reported(tmp_path, caplog):
    json_file = write_text_dataset(tmp_path, lambda c: c["annotations"][0].update(bbox=[250, 10, 30, 30]))
    with caplog.at_level(logging.WARNING, logger="ests_d2.data.text_json"):
        dicts = load_text_json(json_file, str(tmp_path))
    assert [a["bbox"][1] for a in dicts[0]["annotations"]] == [60.0]  # annotation 7 (outside) dropped
    [record] = [r for r in caplog.records if "skipped" in r.getMessage()]
    assert "1 with non-positive boxes" in record.getMessage()
    assert_names_file_and_annotation(record.getMessage(), json_file)


def test_transcription_longer_than_the_slots_is_cut_and_reported(tmp_path, caplog):
    json_file = write_text_dataset(tmp_path, lambda c: c["annotations"][0].update(rec=list(range(33, 33 + 27))))
    with caplog.at_level(logging.WARNING, logger="ests_d2.data.text_json"):
        dicts = load_text_json(json_file, str(tmp_path))
    recs = [a["rec"] for a in dicts[0]["annotations"]]
    assert recs[0] == list(range(33, 33 + 25))  # kept, cut to 25 like the official loader
    assert recs[1] == [33, 34] + [96] * 23
    [record] = [r for r in caplog.records if "were cut" in r.getMessage()]
    assert "1 transcriptions longer than 25" in record.getMessage()
    assert_names_file_and_annotation(record.getMessage(), json_file)
    assert not [r for r in caplog.records if "skipped" in r.getMessage()]


@pytest.mark.parametrize(
    "bezier_pts",
    [[50.0, 20.0] * 8, [float(10 + 10 * i) for i in range(8) for _ in (0, 1)]],  # all equal / all collinear
    ids=["all-points-equal", "zero-area"],
)
def test_degenerate_curve_is_skipped_and_reported(tmp_path, caplog, bezier_pts):
    json_file = write_text_dataset(tmp_path, lambda c: c["annotations"][0].update(bezier_pts=bezier_pts))
    with caplog.at_level(logging.WARNING, logger="ests_d2.data.text_json"):
        dicts = load_text_json(json_file, str(tmp_path))
    assert len(dicts[0]["annotations"]) == 1
    [record] = [r for r in caplog.records if "skipped" in r.getMessage()]
    assert "1 with degenerate curves" in record.getMessage()
    assert_names_file_and_annotation(record.getMessage(), json_file)


def test_unreadable_json_raises(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text('{"images": [')
    with pytest.raises(TextAnnotationError, match="cannot be read as COCO json") as e:
        load_text_json(str(path), str(tmp_path))
    assert str(path) in str(e.value)
    with pytest.raises(TextAnnotationError, match="annotation file not found"):
        load_text_json(str(tmp_path / "absent.json"), str(tmp_path))
