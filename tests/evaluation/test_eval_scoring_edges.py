"""Edge cases of the official matching (scoring.py) that the rule tests left open; found by mutation testing.

Every expected number is worked out by hand in the comment next to it. docs/MUTATION.md lists the
mutants each test was written for.
"""
import re
import warnings

import numpy as np
import pytest

from ests_d2.evaluation.rrc_format import RRCFormatError, TextLine
from ests_d2.evaluation.scoring import (
    MatchCounts,
    _dont_care_detections,
    is_word_spotting_care,
    match_image,
    normalize_word_spotting_gt,
    score,
    transcription_match,
)
from tests.evaluation.eval_helpers import rect


def line(points, text):
    return TextLine(np.asarray(points, np.float32), text)


def test_word_spotting_normalisation_of_lower_case_possessive_and_x_at_the_ends():
    assert normalize_word_spotting_gt("dog's") == "dog"  # the lower-case 's is dropped too
    assert normalize_word_spotting_gt("-XRAY-") == "XRAY"  # only '-' is stripped, an X at the ends stays


def test_word_spotting_care_includes_the_last_letter_of_each_range():
    # z, Z, U+01BF, U+024F, U+03FF close the five allowed ranges and are letters of care words
    assert [is_word_spotting_care(t) for t in ["zzz", "ZZZ", "AB\u01bf", "AB\u024f", "AB\u03ff"]] == [True] * 5
    assert not is_word_spotting_care("AB\u0400")  # the first code point after the Greek range


def test_transcription_match_with_special_characters_at_both_ends_still_needs_the_text():
    assert transcription_match("(HI)", "HI")
    assert not transcription_match("(HI)", "NO")  # both ends special, but 'HI' != 'NO'


def test_metrics_are_zero_when_a_denominator_is_zero_and_report_adds_the_counts():
    assert MatchCounts(0, 0, 2).metrics() == {"precision": 0.0, "recall": 0.0, "hmean": 0.0}  # no care GT
    assert MatchCounts(0, 3, 0).metrics() == {"precision": 0.0, "recall": 0.0, "hmean": 0.0}  # no care det
    # P = 3/5, R = 3/4, H = 2 * 0.6 * 0.75 / 1.35 = 2/3
    assert MatchCounts(3, 4, 5).report() == pytest.approx(
        {"precision": 0.6, "recall": 0.75, "hmean": 2 / 3, "matched": 3, "gt_care": 4, "det_care": 5}
    )


def test_dont_care_detection_needs_more_than_half_of_its_area_inside():
    gt = [line(rect(0, 0, 100, 20), "###"), line(rect(0, 100, 100, 120), "ABC")]
    dets = [
        line(rect(50, 0, 150, 20), "X"),  # 1000 of 2000 inside: exactly half, not don't care
        line(rect(40, 0, 140, 20), "Y"),  # 1200 of 2000 inside: don't care
        line(rect(10, 10, 11, 11), "Z"),  # area 1, all inside: don't care
        line(rect(0, 30, 100, 50), "W"),  # outside: a plain care detection
    ]
    m = match_image(gt, dets, word_spotting=False, where="sample 1")
    assert m.det_dont_care_det.tolist() == [False, True, True, False]
    assert m.det_dont_care_e2e.tolist() == [False, True, True, False]
    e2e, det = m.counts()
    assert (det.care_gt, det.care_det, det.matched) == (1, 2, 0)


def test_a_single_detection_inside_dont_care_is_dont_care():
    gt = [line(rect(0, 0, 100, 20), "###"), line(rect(0, 100, 100, 120), "ABC")]
    m = match_image(gt, [line(rect(0, 0, 100, 20), "ABC")], word_spotting=False, where="sample 1")
    assert m.det_dont_care_det.tolist() == [True]
    assert [c.care_det for c in m.counts()] == [0, 0]


def test_zero_area_polygons_are_never_dont_care_nor_matched_and_raise_no_warning():
    flat = [[0, 10], [50, 10], [100, 10]]  # three collinear points: area 0
    gt = [line(rect(0, 0, 100, 20), "###"), line(flat, "ABC")]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # 0 / 0 must be handled, not warned about
        m = match_image(gt, [line(flat, "ABC")], word_spotting=False, where="sample 1")
    assert m.det_dont_care_det.tolist() == [False]  # 0 of area 0 inside: not "more than half"
    assert m.det_pairs == [] and m.e2e_pairs == []  # union 0 -> IoU 0, not a match


def test_dont_care_fraction_is_computed_per_detection_area():
    inter = np.array([[0.0, 2.0, 1.0], [5.0, 0.0, 0.0]])  # (G, D)
    det_areas = np.array([0.0, 3.0, 4.0])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        flags = _dont_care_detections(inter, det_areas, np.array([True, False]))
    # det 0: area 0 -> 0; det 1: 2/3 > 0.5; det 2: 1/4; the care GT's row is not looked at
    assert flags.tolist() == [False, True, False]


def test_a_detection_matches_one_gt_only():
    gt = [line(rect(0, 0, 100, 20), "ABC"), line(rect(0, 0, 100, 21), "ABC")]  # IoU with the det 1 and 20/21
    m = match_image(gt, [line(rect(0, 0, 100, 20), "ABC")], word_spotting=False, where="sample 1")
    assert m.det_pairs == [(0, 0)] and m.e2e_pairs == [(0, 0, True)]


def test_a_unit_area_gt_and_detection_match():
    gt = [line(rect(5, 5, 6, 6), "ABC")]  # area 1 = union: IoU 1
    m = match_image(gt, [line(rect(5, 5, 6, 6), "abc")], word_spotting=False, where="sample 1")
    assert m.det_pairs == [(0, 0)] and m.e2e_pairs == [(0, 0, True)]


def test_image_matches_keep_the_gt_texts_the_e2e_pass_compared():
    gt = [line(rect(0, 0, 100, 20), "TOM'S"), line(rect(0, 50, 100, 70), "AB")]
    m = match_image(gt, [], word_spotting=True, where="sample 1")
    assert m.gt_texts == ["TOM", "AB"]  # normalised care word; the don't-care one as written
    assert m.gt_dont_care_e2e.tolist() == [False, True] and m.gt_dont_care_det.tolist() == [False, False]


@pytest.mark.parametrize("bad", ["gt", "det"])
def test_malformed_polygons_are_reported_with_their_sample(bad):
    good, two_points = line(rect(0, 0, 10, 10), "A"), line([[0, 0], [5, 5]], "A")
    gt, preds = {"0000007": [good]}, {"0000007": [good]}
    (gt if bad == "gt" else preds)["0000007"] = [two_points]
    where = "sample 0000007 (GT) polygon 1" if bad == "gt" else "sample 0000007 polygon 1"
    with pytest.raises(RRCFormatError, match="^" + re.escape(f"{where}: a polygon needs at least 3 points")):
        score(gt, preds, word_spotting=False)


def test_unknown_prediction_keys_error_names_the_gt_and_five_examples():
    gt = {"0000001": [line(rect(0, 0, 10, 10), "A")]}
    preds = {f"{i:07d}": [] for i in range(2, 9)}  # 7 keys the GT does not have
    with pytest.raises(RRCFormatError) as err:
        score(gt, preds, word_spotting=False)
    assert str(err.value) == (
        "predictions for 7 sample(s) not present in GT, e.g. ['0000002', '0000003', '0000004', '0000005', "
        "'0000006'] (member names must be '{image_id:07d}.txt' of GT members)"
    )


def test_score_reports_progress_over_every_gt_sample_and_keeps_each_image():
    gt = {"0000001": [line(rect(0, 0, 100, 20), "ABC")], "0000002": [line(rect(0, 0, 100, 20), "DEF")]}
    seen = []

    def progress(keys):
        seen.append(list(keys))
        return keys

    result = score(gt, {"0000002": [line(rect(0, 0, 100, 20), "DEF")]}, word_spotting=False, progress=progress)
    assert seen == [["0000001", "0000002"]]
    assert list(result.images) == ["0000001", "0000002"]
    assert result.images["0000001"].det_pairs == [] and result.images["0000002"].e2e_pairs == [(0, 0, True)]
    assert (result.e2e.matched, result.e2e.care_gt, result.e2e.care_det) == (1, 2, 1)
