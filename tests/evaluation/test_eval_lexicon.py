"""Lexicon rules: pair lists (last duplicate wins), plain nearest word, IC15 weighted distance and cut-off."""
import numpy as np
import pytest

from ests_d2.evaluation.lexicon import LexiconMatcher, read_pair_list
from ests_d2.evaluation.pipeline import vocabulary_char_index
from ests_d2.evaluation.weighted_edit import WeightedLexiconSearch, weighted_edit_distance
from tests.evaluation.eval_helpers import evaluate, gt_from, inst, rect

CHAR_INDEX = vocabulary_char_index(97)


def write(path, lines):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")


@pytest.fixture
def lexicon_root(tmp_path):
    write(tmp_path / "totaltext/tt_lexicon.txt", ["HELLO", "WORLD", "HELP", "New York"])
    write(tmp_path / "totaltext/tt_pair_list.txt",
          ["HELLO Hello", "WORLD World", "HELP Help", "HELLO HELLO!", "NEW YORK New York"])
    write(tmp_path / "ic15/GenericVocabulary_new.txt", ["XYZ", "AC", "A", "ABC"])
    write(tmp_path / "ic15/GenericVocabulary_pair_list.txt", ["XYZ xyz", "AC ac", "A a", "ABC abc"])
    write(tmp_path / "ic15/ch4_test_vocabulary_new.txt", ["XYZ"])
    write(tmp_path / "ic15/ch4_test_vocabulary_pair_list.txt", ["XYZ XYZ!"])
    write(tmp_path / "ic15/new_strong_lexicon/new_voc_img_5.txt", ["AC"])
    write(tmp_path / "ic15/new_strong_lexicon/pair_voc_img_5.txt", ["AC \ufeffAC"])
    return str(tmp_path)


def test_pair_list_halves_and_last_duplicate(tmp_path):
    write(tmp_path / "p.txt", ["NEW YORK New York", "A B", "A  lead", "UP UP TO"])
    assert read_pair_list(str(tmp_path / "p.txt"), keys_may_hold_blanks=True) == {
        "NEW YORK": "New York", "A": " lead", "UP": "UP TO",
    }
    assert read_pair_list(str(tmp_path / "p.txt"), keys_may_hold_blanks=False)["UP"] == "UP TO"


def test_full_lexicon_always_returns_the_first_nearest_word(lexicon_root):
    m = LexiconMatcher("totaltext", "full", lexicon_root)
    assert m.match("helo", 0) == "HELLO!"  # HELLO and HELP tie at 1: HELLO is first; its last pair line wins
    assert m.match("", 0) == "Help"  # garbage / empty text still gets the nearest word
    assert m.match("new yorc", 0) == "New York"


def probs_for(rows):
    """(len(rows), 97) float32: 0.001 everywhere except the listed {char: prob} per row."""
    p = np.full((len(rows), 97), 0.001, np.float32)
    for j, row in enumerate(rows):
        for ch, v in row.items():
            p[j, CHAR_INDEX[ch]] = v
    return p


# prediction "AB": P0(A) = 0.9; P1(B) = 0.6, P1(C) = 0.06, P1(A) = 0.01
PROBS = probs_for([{"A": 0.9}, {"B": 0.6, "C": 0.06, "A": 0.01}])


def test_weighted_distance_by_hand():
    # AC: substitute B->C costs 1 - 5 * 0.06 / 0.6 = 0.5
    assert weighted_edit_distance("AB", "AC", PROBS, CHAR_INDEX) == pytest.approx(0.5, abs=1e-6)
    # A: delete the final B costs P1(B) = 0.6; ABC: insert after the last char costs P1(B) = 0.6
    assert weighted_edit_distance("AB", "A", PROBS, CHAR_INDEX) == pytest.approx(0.6, abs=1e-6)
    assert weighted_edit_distance("AB", "ABC", PROBS, CHAR_INDEX) == pytest.approx(0.6, abs=1e-6)
    # a confident alternative (P1(C) >= P1(B) / 5) substitutes for free
    free = probs_for([{"A": 0.9}, {"B": 0.6, "C": 0.3}])
    assert weighted_edit_distance("AB", "AC", free, CHAR_INDEX) == 0.0
    # the first row and column keep unit costs: an empty prediction is len(word) away
    assert weighted_edit_distance("", "XY", PROBS, CHAR_INDEX) == 2.0


def test_trie_search_equals_brute_force_with_first_index_ties():
    rng = np.random.default_rng(0)
    letters = list("ABCDE")
    words = ["".join(rng.choice(letters, rng.integers(1, 6))) for _ in range(300)]
    for _ in range(20):
        query = "".join(rng.choice(letters, rng.integers(0, 6)))
        logits = rng.normal(0, 2, (max(len(query), 1), 97)).astype(np.float32)
        probs = (np.exp(logits) / np.exp(logits).sum(1, keepdims=True)).astype(np.float32)
        dist = [weighted_edit_distance(query, w, probs, CHAR_INDEX) for w in words]
        best = min(range(len(words)), key=lambda i: (dist[i], i))
        found = WeightedLexiconSearch(words, CHAR_INDEX).nearest(query, probs, 100)
        assert found == (float(dist[best]), best)


def test_ic15_generic_keeps_weak_and_strong_drop_above_2_5(lexicon_root):
    generic = LexiconMatcher("icdar2015", "generic", lexicon_root, CHAR_INDEX)
    assert generic.match("ab", 1, PROBS) == "ac"  # 0.5 beats A (0.6), ABC (0.6), XYZ
    weak = LexiconMatcher("icdar2015", "weak", lexicon_root, CHAR_INDEX)
    assert weak.match("AB", 1, PROBS) is None  # XYZ is 2.586 away: the query is dropped
    strong = LexiconMatcher("icdar2015", "strong", lexicon_root, CHAR_INDEX)
    assert strong.match("AB", 5, PROBS) == "\ufeffAC"  # per-image lexicon; the BOM is removed later
    with pytest.raises(FileNotFoundError, match="new_voc_img_6"):
        strong.match("AB", 6, PROBS)
    # the dataset's own folder (as the data path registers lexicon_root) works too
    in_folder = LexiconMatcher("icdar2015", "weak", lexicon_root + "/ic15", CHAR_INDEX)
    assert in_folder.match("XY", 1, probs_for([{"X": 0.9}, {"Y": 0.9}])) == "XYZ!"  # insert Z: 0.9


def test_lexicon_drop_removes_the_detection_too(lexicon_root):
    a = rect(0, 0, 100, 20)
    gt = gt_from({5: [(a, "AC")]})
    kept = {5: [inst(a, "AB", rec_prob=PROBS)]}
    res = evaluate(kept, gt, "icdar2015", lexicon="strong", lexicon_root=lexicon_root)
    assert res["precision"] == 1.0  # AB -> "\ufeffAC" -> "AC" after de_ascii
    gt1 = gt_from({1: [(a, "AC")]})
    res = evaluate({1: [inst(a, "AB", rec_prob=PROBS)]}, gt1, "icdar2015", lexicon="weak", lexicon_root=lexicon_root)
    assert (res["precision"], res["recall"]) == (0.0, 0.0)


def test_unknown_lexicon_names_are_rejected():
    with pytest.raises(ValueError, match="ctw1500 has no 'weak'"):
        evaluate({}, {}, "ctw1500", lexicon="weak")


def test_empty_prediction_is_within_2_5_of_short_words():
    search = WeightedLexiconSearch(["XYZ", "XY", "Q"], CHAR_INDEX)
    empty = np.zeros((0, 97), np.float32)
    assert search.nearest("", empty, 2.5) == (1.0, 2)  # unit costs on the first column: len(word)
    assert WeightedLexiconSearch(["XYZ"], CHAR_INDEX).nearest("", empty, 2.5) is None


def test_generic_lexicon_from_its_own_folder_nearest_word_multiword_keys(tmp_path):
    """The project's generic layout (lexicon.txt + pair_list.txt, no dataset subfolder), as datasets/README.md."""
    write(tmp_path / "lexicon.txt", ["STATION", "NEW YORK", "ST"])
    write(tmp_path / "pair_list.txt", ["STATION Station", "NEW YORK New York", "ST St."])
    matcher = LexiconMatcher("generic", "full", str(tmp_path))
    assert matcher.match("statlon", 1) == "Station"
    assert matcher.match("NEW Y0RK", 1) == "New York"
    assert matcher.match("", 1) == "St."  # the nearest word is always taken, as for Total-Text "full"
