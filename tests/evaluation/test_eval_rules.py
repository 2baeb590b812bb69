"""One hand-built case per rule of docs/EVALUATION.md; expected numbers derived by hand from the rules."""
import numpy as np
import pytest

from ests_d2.structures import CharVocabulary
from ests_d2.evaluation.rrc_format import RRCFormatError
from ests_d2.evaluation.scoring import is_word_spotting_care, normalize_word_spotting_gt, transcription_match
from ests_d2.evaluation.submission import official_line
from tests.evaluation.eval_helpers import evaluate, gt_from, inst, rect

PRH = ("precision", "recall", "hmean")


def prh(metrics):
    return tuple(round(metrics[k], 6) for k in PRH)


A, B, C, D = rect(0, 0, 100, 20), rect(0, 50, 100, 70), rect(0, 100, 100, 120), rect(0, 150, 100, 170)


def test_rec_filter_only_in_e2e():
    gt = gt_from({1: [(A, "HELLO"), (B, "WORLD")]})
    preds = {1: [inst(A, "HELLO", rec_conf=0.99), inst(B, "WORLD", rec_conf=0.97)]}  # TT filter 0.975
    assert prh(evaluate(preds, gt, "totaltext", "e2e")) == (1.0, 0.5, round(2 / 3, 6))
    assert prh(evaluate(preds, gt, "totaltext", "det")) == (1.0, 1.0, 1.0)


def test_decode_skips_padding_and_prints_unknown_glyph_which_de_ascii_deletes():
    text = CharVocabulary.from_config(97).decode([33, 96, 34, 95, 35, -1] + [96] * 19)
    assert text == "AB\u53e3C"  # padding is not a terminator
    gt = gt_from({1: [(A, "ABC")]})
    assert prh(evaluate({1: [inst(A, text)]}, gt, "icdar2015")) == (1.0, 1.0, 1.0)


def test_score_threshold_rounds_the_float32_score():
    gt = gt_from({1: [(A, "ABC"), (B, "DEF")]})
    # float32(0.2425) = 0.24250000715 rounds to 0.243 (kept for IC15); 0.2424 rounds to 0.242 (dropped)
    preds = {1: [inst(A, "ABC", score=0.2425), inst(B, "DEF", score=0.2424)]}
    assert prh(evaluate(preds, gt, "icdar2015", "det")) == (1.0, 0.5, round(2 / 3, 6))
    # float32(0.415) = 0.41499999 rounds to 0.415: kept for Total-Text
    assert prh(evaluate({1: [inst(A, "ABC", score=0.415)]}, gt, "totaltext", "det"))[0] == 1.0
    assert evaluate({1: [inst(A, "ABC", score=0.4144)]}, gt, "totaltext", "det")["precision"] == 0.0


def test_score_floor_of_0_1_applies_whatever_the_threshold():
    gt = gt_from({1: [(A, "ABC"), (B, "DEF")]})
    # float32(0.1) = 0.1000000015 > 0.1 is kept; 0.0999 never is, even with threshold 0
    preds = {1: [inst(A, "ABC", score=0.1), inst(B, "DEF", score=0.0999)]}
    assert prh(evaluate(preds, gt, "icdar2015", "det", det_threshold=0.0)) == (1.0, 0.5, round(2 / 3, 6))


def test_int_truncation_before_iou():
    gt = gt_from({1: [(rect(100, 0, 190, 10), "ABC")]})
    # float IoU 60.9 / 119.1 = 0.511 but truncated to x 70..160: 60 / 120 = 0.5, not > 0.5
    preds = {1: [inst(rect(70.9, 0, 160.9, 10), "ABC")]}
    assert prh(evaluate(preds, gt, "icdar2015", "det")) == (0.0, 0.0, 0.0)
    preds = {1: [inst(rect(71.0, 0, 161.0, 10), "ABC")]}  # 61 / 119 = 0.513
    assert prh(evaluate(preds, gt, "icdar2015", "det")) == (1.0, 1.0, 1.0)


def test_non_ascii_characters_are_deleted_from_predictions_only():
    gt = gt_from({1: [(A, "CAF\u00c9")], 2: [(A, "CAF")]})
    preds = {1: [inst(A, "CAF\u00c9")], 2: [inst(A, "CAF\u00c9")]}
    assert prh(evaluate(preds, gt, "icdar2015")) == (0.5, 0.5, 0.5)


def test_text_is_cut_at_the_first_colon_blank():
    gt = gt_from({1: [(A, "AB"), (B, "EF: GH")]})
    preds = {1: [inst(A, "AB: CD"), inst(B, "EF: GH")]}  # -> "AB" (match) and "EF" (GT keeps ': GH')
    assert prh(evaluate(preds, gt, "ctw1500")) == (0.5, 0.5, 0.5)


def test_invalid_polygons_are_removed_not_counted():
    gt = gt_from({1: [(A, "ABC")]})
    bowtie = np.array([[0, 0], [100, 20], [100, 0], [0, 20]], np.float32)
    preds = {1: [inst(bowtie, "ABC"), inst(A, "ABC")]}
    assert prh(evaluate(preds, gt, "icdar2015", "det")) == (1.0, 1.0, 1.0)  # 0.5 precision if kept


def test_word_spotting_normalises_gt_only_and_adds_dont_care():
    assert normalize_word_spotting_gt("-TOM'S-") == "TOM S"  # 's only at the very end; ' becomes a blank
    assert normalize_word_spotting_gt("TOM'S") == "TOM"
    assert [is_word_spotting_care(t) for t in ["AB", "2020", "NEW YORK", "caf\u00e9", "a-b", "x\u00d7y"]] == [
        False, False, False, True, True, False,
    ]
    gt = gt_from({1: [(A, "TOM'S"), (B, "AB"), (C, "2020"), (D, "HELLO")], 2: [(A, "TOM'S")]})
    preds = {1: [inst(A, "TOM'S"), inst(B, "AB"), inst(C, "2020"), inst(D, "hello")], 2: [inst(A, "TOM")]}
    # e2e: care GT = TOM'S, HELLO, TOM'S; dets on AB / 2020 are don't care; matched: hello, TOM
    assert prh(evaluate(preds, gt, "totaltext")) == (round(2 / 3, 6), round(2 / 3, 6), round(2 / 3, 6))
    # without word spotting every line is a care GT and TOM'S -> TOM fails
    assert evaluate(preds, gt, "totaltext", word_spotting=0)["recall"] == 0.8
    assert prh(evaluate(preds, gt, "totaltext", "det")) == (1.0, 1.0, 1.0)


def test_transcription_match_drops_one_special_character_of_the_gt_only():
    assert transcription_match("HELLO!", "HELLO") and transcription_match("(HI)", "HI")
    assert not transcription_match("WORLD", "WORLD!") and not transcription_match("!!A", "A")
    assert transcription_match("", "") and not transcription_match("", "X")
    gt = gt_from({1: [(A, "HELLO!"), (B, "WORLD"), (C, "(HI)"), (D, "!!A")]})
    preds = {1: [inst(A, "hello"), inst(B, "WORLD!"), inst(C, "HI"), inst(D, "A")]}
    assert prh(evaluate(preds, gt, "icdar2015")) == (0.5, 0.5, 0.5)


def test_dont_care_detection_is_decided_before_matching():
    gt = gt_from({1: [(A, "###"), (A, "ABC"), (C, "DEF")]})
    off_c = C + np.float32([0, -9])  # IoU with C = 1100 / 2900 < 0.5
    preds = {1: [inst(A, "ABC"), inst(off_c, "DEF")]}
    # the det on A is don't care (all of it inside ###), so it cannot take the care GT "ABC" (IoU 1);
    # the other one is a plain false positive
    assert prh(evaluate(preds, gt, "icdar2015", "det")) == (0.0, 0.0, 0.0)
    preds = {1: [inst(A, "ABC"), inst(C, "DEF")]}
    assert prh(evaluate(preds, gt, "icdar2015", "det")) == (1.0, 0.5, round(2 / 3, 6))


def test_greedy_matching_is_order_dependent_and_text_blind():
    gt = gt_from({1: [(A, "ABC")]})
    preds = {1: [inst(A + np.float32([2, 0]), "XYZ"), inst(A, "ABC")]}
    assert prh(evaluate(preds, gt, "icdar2015")) == (0.0, 0.0, 0.0)  # the wrong-text duplicate takes the GT
    assert prh(evaluate(preds, gt, "icdar2015", "det")) == (0.5, 1.0, round(2 / 3, 6))
    preds = {1: [inst(A, "ABC"), inst(A + np.float32([2, 0]), "XYZ")]}
    assert prh(evaluate(preds, gt, "icdar2015")) == (0.5, 1.0, round(2 / 3, 6))


def test_precision_is_zero_without_detections():
    gt = gt_from({1: [(A, "ABC")]})
    assert prh(evaluate({1: []}, gt, "icdar2015", "det")) == (0.0, 0.0, 0.0)


def test_quotes_are_unwrapped_in_gt_and_predictions():
    gt = gt_from({1: [(A, '"SAMSUNG"'), (B, "ABC")]})
    preds = {1: [inst(A, "SAMSUNG"), inst(B, '"ABC"')]}
    assert prh(evaluate(preds, gt, "ctw1500")) == (1.0, 1.0, 1.0)


def test_empty_gt_transcription_matches_only_an_empty_prediction():
    gt = gt_from({1: [(A, ""), (B, "")]})
    preds = {1: [inst(A, ""), inst(B, "X")]}
    assert prh(evaluate(preds, gt, "ctw1500")) == (0.5, 0.5, 0.5)


def test_prediction_for_an_image_missing_from_the_gt_is_an_error():
    gt = gt_from({1: [(A, "ABC")]})
    with pytest.raises(RRCFormatError, match="not present"):
        evaluate({2: [inst(A, "ABC")]}, gt, "icdar2015")


def test_official_line_truncates_and_writes_clockwise():
    line = official_line(7, inst(rect(0.9, -0.5, 10.7, 5.2), "A\u00e9: B"), "A\u00e9: B", "t")
    # shapely sees (0,0),(10,0),(10,5),(0,5) as counter-clockwise -> reversed
    assert line == "0,5,10,5,10,0,0,0,####A"
