"""Vocabulary, decoding quirks, Bezier sampling and the Instances-friendly text list."""
import numpy as np
import pytest
import torch
from detectron2.structures import Instances

from ests_d2.structures import UNKNOWN_GLYPH, CharVocabulary, bezier_to_polygon
from ests_d2.structures.text_list import TextList


def test_en_vocabulary_ids_and_official_decoding():
    vocab = CharVocabulary.from_config(97)
    assert (vocab.unknown_id, vocab.pad_id) == (95, 96)
    assert vocab.encode("Ab!", 5) == [33, 66, 1, 96, 96]
    assert vocab.encode("é", 2) == [95, 96]
    # padding is skipped, not a terminator; unknown prints as the official glyph
    assert vocab.decode([33, 96, 66, 95, 96]) == "Ab" + UNKNOWN_GLYPH


def test_vocabulary_size_mismatch_is_explained():
    with pytest.raises(ValueError, match="VOC_SIZE is 107 .* 97 classes"):
        CharVocabulary.from_config(107)


def test_bezier_sampling_hits_end_points_and_midpoint():
    # top curve: straight line (0,0)->(30,0); bottom curve: (30,10)->(0,10)
    ctrl = np.array([0, 0, 10, 0, 20, 0, 30, 0, 30, 10, 20, 10, 10, 10, 0, 10], dtype=np.float64)
    poly = bezier_to_polygon(ctrl).reshape(16, 2)
    assert np.allclose(poly[0], [0, 0]) and np.allclose(poly[7], [30, 0])
    assert np.allclose(poly[8], [30, 10]) and np.allclose(poly[15], [0, 10])
    assert np.allclose(poly[:8, 0], np.linspace(0, 30, 8))  # evenly spaced control points -> even samples


def test_text_list_follows_instances_indexing():
    inst = Instances((10, 10), scores=torch.tensor([0.9, 0.1, 0.5]), texts=TextList(["a", "b", "c"]))
    kept = inst[inst.scores > 0.4]
    assert kept.texts == ["a", "c"] and isinstance(kept.texts, TextList)
    assert inst[torch.tensor([2, 0])].texts == ["c", "a"]
    assert inst[[1]].texts == ["b"]
    assert inst[1:].texts == ["b", "c"]
    assert inst.texts[0] == "a"
    with pytest.raises(IndexError):
        TextList(["a"])[torch.tensor([True, False])]


def test_numpy_bezier_sampling_needs_no_torch_and_matches_torch_at_8_points():
    import subprocess
    import sys

    from ests_d2.structures.bezier import bernstein_weights

    u = torch.linspace(0, 1, 8, dtype=torch.float64)
    torch_weights = torch.stack([(1 - u) ** 3, 3 * u * (1 - u) ** 2, 3 * u**2 * (1 - u), u**3], dim=1)
    assert np.array_equal(bernstein_weights(8), torch_weights.numpy())
    code = "import sys, numpy as np, ests_d2.structures as s; s.bezier_to_polygon(np.zeros(16)); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
