"""Polygon3-compatible geometry and the official file format (parsing, zips, member keys)."""
import zipfile

import numpy as np
import pytest

from ests_d2.evaluation.polygon_ops import even_odd_region, shoelace_area
from ests_d2.evaluation.rrc_format import RRCFormatError, member_key, parse_line, read_zip
from ests_d2.evaluation.scoring import score
from tests.evaluation.eval_helpers import gt_from, rect

BOWTIE = np.array([[0, 0], [10, 10], [10, 0], [0, 10]], np.float32)
SQUARE = rect(0, 0, 10, 10)


def test_self_intersecting_polygons_follow_polygon3():
    # Polygon3: area() is the |shoelace| sum (0 for a symmetric bow-tie), clipping is even-odd
    assert shoelace_area(BOWTIE) == 0.0
    assert even_odd_region(BOWTIE).intersection(even_odd_region(SQUARE)).area == pytest.approx(50.0)
    twice = np.concatenate([SQUARE, SQUARE])
    assert shoelace_area(twice) == 200.0 and even_odd_region(twice).area == 0.0
    with pytest.raises(RRCFormatError, match="at least 3 points"):
        even_odd_region(np.zeros((2, 2)))


def test_line_parsing_rules():
    line = parse_line('1,2,3.5,4,5,6,#### "A\\"B" ', "t")
    assert line.points.tolist() == [[1, 2], [3.5, 4], [5, 6]] and line.text == 'A"B'
    assert parse_line("1,2,3,4,5,6,####a,####b", "t").text == "a"
    with pytest.raises(RRCFormatError, match="odd number"):
        parse_line("1,2,3,####x", "t")
    with pytest.raises(RRCFormatError, match="separator"):
        parse_line("1,2,3,4,x", "t")


def test_member_keys_are_digit_strings():
    assert member_key("0000177.txt") == "0000177" and member_key("177.txt") == "177"
    assert member_key("res_img_1.txt") is None
    gt = gt_from({177: [(SQUARE, "ABC")]})
    with pytest.raises(RRCFormatError, match="not present"):
        score(gt, {"177": []}, False)  # '177' is not '0000177'


def test_zip_reading_bom_crlf_and_strictness(tmp_path):
    path = tmp_path / "p.zip"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("0000001.txt", "\ufeff0,0,10,0,10,10,0,10,####AB\r\n\r\n".encode("utf-8"))
        z.writestr("readme.md", "x")
    gt = read_zip(str(path), strict=False)
    assert list(gt) == ["0000001"] and gt["0000001"][0].text == "AB"
    with pytest.raises(RRCFormatError, match="readme.md"):
        read_zip(str(path), strict=True)
