"""VinText, ReCTS (1-NED) and the generic "unicode" protocol: Unicode texts kept from predictions to scores."""
import zipfile

import numpy as np
import pytest

from ests_d2.evaluation.pipeline import parse_files
from ests_d2.evaluation.predictions import ImagePrediction, InstancePrediction
from ests_d2.evaluation.script_protocols import evaluate_script_protocol, one_minus_ned, unicode_key


def _rect(x0, y0, x1, y1):
    return np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], dtype=np.float32)


def _gt(*instances):
    """One image (id 1) of GT lines from (rect, text) pairs, written as the official clockwise line."""
    lines = [",".join(f"{int(x)},{int(y)}" for x, y in r) + ",####" + t for r, t in instances]
    return parse_files({"0000001.txt": lines}, "test GT")


def _pred(*instances, score=0.9, rec_conf=0.99):
    return [ImagePrediction(1, [InstancePrediction(r, score, t, rec_conf) for r, t in instances])]


A, B, C = _rect(0, 0, 100, 30), _rect(0, 50, 100, 80), _rect(0, 100, 100, 130)


def test_vintext_keeps_vietnamese_and_applies_the_official_word_spotting_rules(tmp_path):
    gt = _gt((A, "Hàng"), (B, "Việt"), (C, "###"))
    # "Việt" has U+1EC7: outside the official word-spotting letter ranges, so it is don't care in e2e
    results = evaluate_script_protocol(_pred((A, "HÀNG"), (B, "Việt")), gt, "vintext", output_dir=str(tmp_path))
    assert results["text_det"] == {"precision": 1.0, "recall": 1.0, "hmean": 1.0}
    assert results["text_e2e"]["recall"] == 1.0 and results["text_e2e"]["precision"] == 1.0
    with zipfile.ZipFile(tmp_path / "text_e2e_det.zip") as archive:
        assert archive.read("0000001.txt").decode("utf-8").splitlines()[0].endswith(",####HÀNG")
    wrong = evaluate_script_protocol(_pred((A, "Hang"), (B, "Việt")), gt, "vintext", tasks=["e2e"])
    assert wrong["text_e2e"]["recall"] == 0.0  # the diacritics count


def test_vintext_rec_confidence_filter_is_official():
    gt = _gt((A, "Hàng"))
    kept = evaluate_script_protocol(_pred((A, "Hàng"), rec_conf=0.98), gt, "vintext", tasks=["e2e"])
    dropped = evaluate_script_protocol(_pred((A, "Hàng"), rec_conf=0.97), gt, "vintext", tasks=["e2e"])
    assert kept["text_e2e"]["hmean"] == 1.0 and dropped["text_e2e"]["hmean"] == 0.0


def test_unicode_protocol_compares_nfkc_casefolded_texts():
    assert unicode_key("ＡＢＣ") == unicode_key("abc") and unicode_key("e\u0301") == unicode_key("\u00e9")
    gt = _gt((A, "中文"), (B, "abc"), (C, "Café"))
    pred = _pred((A, "中文"), (B, "ＡＢＣ"), (C, "CAFE\u0301"), rec_conf=0.1)  # no recognition filter by default
    results = evaluate_script_protocol(pred, gt, "unicode")
    assert results["text_e2e"] == {"precision": 1.0, "recall": 1.0, "hmean": 1.0}
    results = evaluate_script_protocol(_pred((A, "中人"), (B, "abc")), gt, "unicode", tasks=["e2e"])
    assert results["text_e2e"]["recall"] == pytest.approx(1 / 3)


def test_rects_one_minus_ned_counts_misses_and_false_alarms():
    gt = _gt((A, "中国银行"), (B, "###"), (C, "招商"))
    pred = _pred((A, "中国银"), (_rect(300, 0, 400, 30), "多余"), (B, "忽略"))
    results = evaluate_script_protocol(pred, gt, "rects")
    # pairs: (中国银行, 中国银) d = 1/4; unmatched GT 招商 and unmatched detection 多余: d = 1 each;
    # the detection inside the ### region is ignored
    assert results["text_e2e"]["1-ned"] == pytest.approx(1 - (0.25 + 1 + 1) / 3)
    assert results["text_det"]["recall"] == 0.5 and results["text_det"]["precision"] == 0.5
    assert one_minus_ned({"1": []}, {}) == {"1-ned": 1.0}


def test_rects_uses_the_official_submission_threshold():
    gt = _gt((A, "中国"))
    assert evaluate_script_protocol(_pred((A, "中国"), score=0.36), gt, "rects")["text_e2e"]["1-ned"] == 1.0
    assert evaluate_script_protocol(_pred((A, "中国"), score=0.34), gt, "rects")["text_e2e"]["1-ned"] == 0.0
