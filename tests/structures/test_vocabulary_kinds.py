"""One vocabulary object per config: EN, a character file, the official pickled code points, VinText."""
import os
import pickle

import pytest

from ests_d2.config import load_ests_config
from ests_d2.structures import UNKNOWN_GLYPH, build_vocabulary, load_vocabulary
from ests_d2.structures.vintext import vintext_decode, vintext_encode
from ests_d2.structures.vocabulary import read_code_point_pickle
from tests.shared_paths import REPO_ROOT

BASE = str(REPO_ROOT / "configs" / "Base-ESTS.yaml")
VIETNAMESE = ["Việt", "Nam", "đường", "Hà", "Nội", "phở", "quả", "giữa", "người", "Đà", "Nẵng", "ĐẸP", "ổi"]


def _cfg(*opts):
    return load_ests_config(BASE, list(opts))


def test_default_config_is_the_official_en_vocabulary():
    vocab = build_vocabulary(_cfg())
    assert vocab.kind == "en" and vocab.num_classes == 97 and (vocab.unknown_id, vocab.pad_id) == (95, 96)
    assert vocab.encode("Az~", 5) == [33, 90, 94, 96, 96]
    assert build_vocabulary(_cfg()) is vocab  # built once, shared by every component


def test_character_file(tmp_path):
    path = tmp_path / "chars.txt"
    path.write_bytes("中\r\n文\n\n字\n".encode("utf-8"))
    vocab = build_vocabulary(_cfg("MODEL.ESTS.VOCABULARY", "char_file", "MODEL.ESTS.CUSTOM_DICT", str(path),
                                  "MODEL.ESTS.VOC_SIZE", "5"))
    assert vocab.characters == ["中", "文", "字"] and vocab.encode("字中?", 4) == [2, 0, 3, 4]
    assert vocab.decode([1, 4, 3, 0]) == "文" + UNKNOWN_GLYPH + "中"
    with pytest.raises(ValueError, match=r"VOC_SIZE is 6 but .*chars.txt gives 3 characters .* = 5 classes"):
        build_vocabulary(_cfg("MODEL.ESTS.CUSTOM_DICT", str(path), "MODEL.ESTS.VOC_SIZE", "6"))
    path.write_text("中\nab\n", encoding="utf-8")
    os.utime(path, (1, 1))  # a new modification time: the cached vocabulary of the old content is not reused
    with pytest.raises(ValueError, match=r"chars.txt line 2: 'ab' is 2 characters"):
        load_vocabulary("char_file", str(path))


def test_official_code_point_pickle(tmp_path):
    path = tmp_path / "chn_cls_list.txt"  # the official name: a pickle despite the extension
    path.write_bytes(pickle.dumps([0x4E2D, 0x6587, "字"]))
    vocab = load_vocabulary("code_point_pickle", str(path), voc_size=5)
    assert vocab.characters == ["中", "文", "字"]
    with pytest.raises(ValueError, match="not UTF-8 text.*code_point_pickle"):
        load_vocabulary("char_file", str(path))
    path.write_bytes(pickle.dumps({"a": 1}))
    with pytest.raises(ValueError, match="holds a dict, expected a list of code points"):
        read_code_point_pickle(str(path))
    path.write_bytes(pickle.dumps([65, "ab"]))
    with pytest.raises(ValueError, match="entry 1 is 'ab'"):
        read_code_point_pickle(str(path))


class _Hostile:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))  # unpickling would create the marker file


def test_pickle_with_code_is_refused_without_running_it(tmp_path):
    marker = tmp_path / "was_run"
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps([20013, _Hostile(str(marker))]))
    with pytest.raises(ValueError, match=r"refusing to load \w+\.open"):
        read_code_point_pickle(str(path))
    assert not marker.exists()


@pytest.mark.parametrize("word", VIETNAMESE)
def test_vintext_encoding_round_trip(word):
    symbols = vintext_encode(word)
    assert all(ord(c) < 128 or c in "ˋˊ﹒ˀ˜ˇˆ˒‑" for c in symbols)
    assert vintext_decode(symbols) == word


def test_vintext_symbols_and_official_decoder_rules():
    assert vintext_encode("Việt") == "Vieˆt﹒" and vintext_encode("đường") == "d‑u˒o˒ngˋ"
    assert vintext_encode("Đà") == "D-aˋ"
    # the tone goes on the vowel before a final vowel, except after "qu" / "gi"
    assert vintext_decode("muaˊ") == "múa" and vintext_decode("quaˀ") == "quả" and vintext_decode("giaˊ") == "giá"
    # official quirks: the tone lands on every occurrence of the chosen vowel; a lone tone symbol is kept
    assert vintext_decode(vintext_encode("Thuỷ")) == "Thủy"  # the official rule picks the old-style position
    assert vintext_decode("aaˊ") == "áá" and vintext_decode("ˊ") == "ˊ" and vintext_decode("bcˊ") == "bc"
    with pytest.raises(ValueError, match="more than one tone mark"):
        vintext_encode("Việt Nam Đẹp")


def test_vintext_vocabulary_ids():
    vocab = build_vocabulary(_cfg("MODEL.ESTS.VOCABULARY", "vintext", "MODEL.ESTS.VOC_SIZE", "107"))
    assert (len(vocab.characters), vocab.pad_id, vocab.unknown_id, vocab.num_classes) == (104, 105, 106, 107)
    ids = vocab.encode("Việt", 25)
    assert ids[:6] == [54, 73, 69, 101, 84, 97] and set(ids[6:]) == {105}
    assert vocab.decode(ids) == "Việt"
    assert vocab.decode([33, 104, 105, 106]) == "A" + UNKNOWN_GLYPH  # 104 unused, 105 padding, 106 unknown
    with pytest.raises(ValueError, match="VOC_SIZE is 97 .* 107 classes"):
        build_vocabulary(_cfg("MODEL.ESTS.VOCABULARY", "vintext"))


def test_bad_kind_and_missing_file_are_named(tmp_path):
    with pytest.raises(ValueError, match="VOCABULARY is 'klingon'"):
        build_vocabulary(_cfg("MODEL.ESTS.VOCABULARY", "klingon"))
    with pytest.raises(FileNotFoundError, match="CUSTOM_DICT: vocabulary file not found: .*nope.txt"):
        build_vocabulary(_cfg("MODEL.ESTS.CUSTOM_DICT", str(tmp_path / "nope.txt")))
    with pytest.raises(ValueError, match="needs MODEL.ESTS.CUSTOM_DICT"):
        build_vocabulary(_cfg("MODEL.ESTS.VOCABULARY", "code_point_pickle"))
