"""Inputs that used to load into wrong training data without a word: each is now an error or a counted skip."""
import json
import logging

import pytest

from ests_d2.data.text_json import TextAnnotationError, load_text_json
from tests.data.data_helpers import assert_names_file_and_annotation, write_text_dataset


def _load_with_warnings(json_file, image_root, caplog):
    with caplog.at_level(logging.WARNING, logger="ests_d2.data.text_json"):
        dicts = load_text_json(json_file, image_root)
    return dicts, [r.getMessage() for r in caplog.records if "skipped" in r.getMessage()]


def test_duplicate_image_ids_raise_naming_the_id(tmp_path):
    """pycocotools keeps the last image of an id, which then gets the words of both images."""
    def duplicate(coco):
        coco["images"].append({"id": 3, "file_name": "b.jpg", "height": 100, "width": 200})

    json_file = write_text_dataset(tmp_path, duplicate)
    with pytest.raises(TextAnnotationError, match="image id 3 is used twice") as e:
        load_text_json(json_file, str(tmp_path))
    assert json_file in str(e.value) and "'a.jpg'" in str(e.value) and "'b.jpg'" in str(e.value)


def test_annotation_of_no_image_is_counted(tmp_path, caplog):
    json_file = write_text_dataset(tmp_path, lambda c: c["annotations"][1].update(image_id=99))
    dicts, skipped = _load_with_warnings(json_file, str(tmp_path), caplog)
    assert [len(d["annotations"]) for d in dicts] == [1]
    [message] = skipped
    assert "skipped 1 annotations: 1 with an image_id that is in no image" in message
    assert "annotation id 8 (image_id 99)" in message and json_file in message


@pytest.mark.parametrize("key", ["images", "annotations"])
def test_missing_top_level_list_is_named(tmp_path, key):
    json_file = write_text_dataset(tmp_path, lambda c: c.pop(key))
    with pytest.raises(TextAnnotationError, match=f"has no '{key}' list") as e:
        load_text_json(json_file, str(tmp_path))
    assert json_file in str(e.value)


def test_empty_images_list_and_non_object_json_are_named(tmp_path):
    json_file = write_text_dataset(tmp_path, lambda c: c.update(images=[], annotations=[]))
    with pytest.raises(TextAnnotationError, match="the 'images' list is empty"):
        load_text_json(json_file, str(tmp_path))
    path = tmp_path / "list.json"
    path.write_text(json.dumps([{"id": 1}]))
    with pytest.raises(TextAnnotationError, match="the top level is a list"):
        load_text_json(str(path), str(tmp_path))


def test_far_control_point_is_skipped_and_counted(tmp_path, caplog):
    """One control point at 1e9 with a normal bbox: the polygon loss of that word would be ~1e7."""
    def corrupt(coco):
        coco["annotations"][0]["bezier_pts"][3] = 1e9  # y of the second control point

    json_file = write_text_dataset(tmp_path, corrupt)
    dicts, skipped = _load_with_warnings(json_file, str(tmp_path), caplog)
    assert [a["bbox"][1] for a in dicts[0]["annotations"]] == [60.0]  # only annotation 8 left
    [message] = skipped
    assert "1 with control points more than 1 side beyond the box or the image" in message
    assert_names_file_and_annotation(message, json_file)


def test_curved_control_points_beyond_the_box_are_kept(tmp_path, caplog):
    """An arch: the middle control points stand above the box (as on real curved text), within the margin."""
    arch = [10.0, 40.0, 30.0, 0.0, 80.0, 0.0, 100.0, 40.0, 100.0, 60.0, 80.0, 20.0, 30.0, 20.0, 10.0, 60.0]
    json_file = write_text_dataset(tmp_path, lambda c: c["annotations"][0].update(bezier_pts=arch,
                                                                                 bbox=[10, 10, 90, 50]))
    dicts, skipped = _load_with_warnings(json_file, str(tmp_path), caplog)
    assert len(dicts[0]["annotations"]) == 2 and not skipped


@pytest.mark.parametrize(
    "rec, expected",
    [
        ("AB", r"rec must be a list of integer class ids, got a str \('AB'\)"),
        ("33", r"rec must be a list of integer class ids, got a str"),  # used to become [3, 3]
        ([33, 40.7], r"rec\[1\] is 40.7 \(float\)"),  # used to become 40
        ([33, "34"], r"rec\[1\] is '34' \(str\)"),
        ([33, True], r"rec\[1\] is True \(bool\)"),
    ],
    ids=["string", "digit-string", "float-id", "string-id", "bool-id"],
)
def test_rec_that_is_not_a_list_of_integers_raises(tmp_path, rec, expected):
    json_file = write_text_dataset(tmp_path, lambda c: c["annotations"][0].update(rec=rec))
    with pytest.raises(TextAnnotationError, match=expected) as e:
        load_text_json(json_file, str(tmp_path))
    assert_names_file_and_annotation(str(e.value), json_file)


@pytest.mark.parametrize("rec", [[], [96] * 25], ids=["empty", "only-padding"])
def test_word_without_transcription_is_skipped_unless_dont_care(tmp_path, caplog, rec):
    def no_text(coco):
        coco["annotations"][0]["rec"] = rec
        coco["annotations"][1].update(rec=list(rec), iscrowd=1)  # don't care: its text is never trained

    json_file = write_text_dataset(tmp_path, no_text)
    dicts, skipped = _load_with_warnings(json_file, str(tmp_path), caplog)
    assert [(a["iscrowd"], a["rec"]) for a in dicts[0]["annotations"]] == [(1, [96] * 25)]
    [message] = skipped
    assert "1 with no transcription (rec empty or only padding)" in message
    assert_names_file_and_annotation(message, json_file)


def test_nan_bbox_is_reported_as_nan(tmp_path, caplog):
    json_file = write_text_dataset(tmp_path, lambda c: c["annotations"][0].update(bbox=[10, float("nan"), 90, 30]))
    dicts, skipped = _load_with_warnings(json_file, str(tmp_path), caplog)
    assert len(dicts[0]["annotations"]) == 1
    [message] = skipped
    assert "1 with a bbox holding NaN or infinity" in message and "non-positive" not in message
    assert_names_file_and_annotation(message, json_file)


@pytest.mark.parametrize(
    "field, value, expected",
    [("bbox", [10, 10, 90], "bbox has 3 values, expected 4"),
     ("bbox", ["10", "x", 1, 2], "bbox must be a list of 4 numbers"),
     ("bezier_pts", "0,1,2", "bezier_pts must be a list of 16 numbers")],
)
def test_malformed_number_lists_raise_naming_the_field(tmp_path, field, value, expected):
    json_file = write_text_dataset(tmp_path, lambda c: c["annotations"][0].update({field: value}))
    with pytest.raises(TextAnnotationError, match=expected) as e:
        load_text_json(json_file, str(tmp_path))
    assert_names_file_and_annotation(str(e.value), json_file)
