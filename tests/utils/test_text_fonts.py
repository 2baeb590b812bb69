"""Pictures in any script: PIL TrueType text, DejaVu by default, --font for CJK, missing glyphs reported."""
import logging
import os

import numpy as np
import pytest
import torch
from detectron2.structures import Instances

from ests_d2.structures.text_list import TextList
from ests_d2.utils.visualization import TextPainter, default_font_path, draw_text_instances, missing_glyphs

SERIF = os.path.join(os.path.dirname(default_font_path()), "DejaVuSerif.ttf")


def _render(painter, text):
    return painter.draw(np.zeros((40, 160, 3), np.uint8), [(2.0, 2.0, text)], 20)


def test_dejavu_covers_vietnamese_but_not_chinese():
    assert missing_glyphs(default_font_path(), "Việt Nam đường ĐẸP ˋˊ﹒") == ["﹒"]  # the mark symbols are not letters
    assert missing_glyphs(default_font_path(), "中文 ok") == ["中", "文"]


def test_vietnamese_is_drawn_with_its_diacritics():
    painter = TextPainter()
    plain, marked = _render(painter, "Viet"), _render(painter, "Việt")
    assert marked.max() > 0 and not np.array_equal(plain, marked)
    assert not np.array_equal(marked, _render(painter, "Vi?t"))  # a real glyph, not the substitute


def test_missing_glyphs_are_reported_once_and_drawn_as_question_marks(caplog):
    painter = TextPainter()
    with caplog.at_level(logging.WARNING, logger="ests_d2.utils.visualization"):
        assert painter.drawable("中文 ok") == "?? ok"
        assert painter.drawable("中") == "?"
        assert painter.drawable("口A") == "?A"  # the unknown-class glyph: substituted without a warning
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 1
    assert "U+4E2D" in warnings[0] and "U+6587" in warnings[0] and "--font" in warnings[0]
    assert np.array_equal(_render(painter, "中"), _render(painter, "?"))


def test_another_font_is_used_and_a_bad_path_is_named(tmp_path):
    assert not np.array_equal(_render(TextPainter(SERIF), "Việt"), _render(TextPainter(), "Việt"))
    with pytest.raises(FileNotFoundError, match="font file not found: .*nope.ttf"):
        TextPainter(str(tmp_path / "nope.ttf"))


def test_draw_text_instances_writes_each_label():
    image = np.full((120, 200, 3), 80, np.uint8)
    instances = Instances((120, 200))
    box = torch.tensor([[20.0, 60.0], [120.0, 60.0], [120.0, 90.0], [20.0, 90.0]])
    instances.polygons = torch.cat([box, box.flip(0)]).repeat(2, 1).reshape(1, 32)
    instances.scores = torch.tensor([0.9])
    instances.texts = TextList(["phở"])
    drawn = draw_text_instances(image, instances)
    assert drawn.shape == image.shape and drawn.dtype == np.uint8
    assert (drawn[30:60] != image[30:60]).any()  # the label above the polygon
