"""Official lexicon matching (``lexicon_procesor.py`` semantics, docs/EVALUATION.md "Lexicon matching").

The prediction is upper-cased and compared with every upper-cased lexicon word in file order; the
first strictly smallest distance (below the official start value 100) wins, and the output is the
pair list's original spelling of that word (for a key listed twice, the last line wins).
Total-Text / CTW1500 use the plain edit distance and always return the nearest word; ICDAR2015 uses
the weighted distance on ``rec_prob`` and, for the weak and strong lexicons, drops the instance unless
the distance is below 2.5.
"""
import os
from typing import Dict, List, Optional, Tuple

import numpy as np
from rapidfuzz import process
from rapidfuzz.distance import Levenshtein

from .protocol import DEFAULTS, LexiconFiles
from .weighted_edit import WeightedLexiconSearch

START_DISTANCE = 100  # the official initial "best" distance: only smaller distances can match
WEIGHTED_CUTOFF = 2.5  # IC15 weak/strong: keep the match only below this distance


def _read_lines(path: str) -> List[str]:
    if not os.path.isfile(path):
        raise FileNotFoundError(f"lexicon file not found: {path}")
    with open(path, encoding="utf-8") as f:
        return f.readlines()


def read_pair_list(path: str, keys_may_hold_blanks: bool) -> Dict[str, str]:
    """``{KEY: original}``; TT/CTW lines are split into two equal halves of blank-separated tokens."""
    pairs = {}
    for line in _read_lines(path):
        line = line.strip()
        tokens = line.split(" ")
        key = " ".join(tokens[: len(tokens) // 2]) if keys_may_hold_blanks else tokens[0]
        key = key.upper()
        pairs[key] = line[len(key) + 1 :]  # the last line of a duplicated key wins
    return pairs


def lexicon_path(root: str, relative: str) -> str:
    """``root/<dataset folder>/file``, or ``root/file`` when root already is the dataset's folder."""
    full = os.path.join(root, relative)
    if "/" not in relative:  # the generic layout has no dataset folder
        return full
    inside = os.path.join(root, relative.split("/", 1)[1])
    return full if os.path.exists(full) or not os.path.exists(inside) else inside


def read_word_list(path: str) -> List[str]:
    return [line.strip() for line in _read_lines(path)]


class _LoadedLexicon:
    def __init__(self, words_path: str, pairs_path: str, full_dataset: bool, char_index=None):
        self.words = [w.upper() for w in read_word_list(words_path)]
        self.pairs = read_pair_list(pairs_path, keys_may_hold_blanks=full_dataset)
        missing = sorted({w for w in self.words if w not in self.pairs})
        if missing:
            raise ValueError(f"{len(missing)} word(s) of {words_path} have no line in {pairs_path}, e.g. {missing[:5]}")
        self.weighted = WeightedLexiconSearch(self.words, char_index) if char_index is not None else None

    def nearest_plain(self, text: str) -> Optional[int]:
        if not self.words:
            return None
        dist = process.cdist([text], self.words, scorer=Levenshtein.distance, dtype=np.int32, workers=1)[0]
        best = int(np.argmin(dist))  # first minimum, as the official strict '<' loop
        return best if dist[best] < START_DISTANCE else None


class LexiconMatcher:
    """Matches decoded predictions against one official lexicon of one dataset.

    Args:
        protocol: "totaltext", "ctw1500", "icdar2015" or "generic".
        name: lexicon name of that protocol ("full", "weak", "generic", "strong").
        root: folder with the official ``lexicons/`` layout (``totaltext/``, ``ctw1500/``, ``ic15/``), or
            directly the protocol's folder of it (``lexicons/ic15``); for "generic", the folder holding
            ``lexicon.txt`` and ``pair_list.txt``.
        char_index: character -> class index of ``rec_prob`` (vocabulary + unknown glyph); needed by
            the IC15 weighted distance.
    """

    def __init__(self, protocol: str, name: str, root: str, char_index: Optional[Dict[str, int]] = None):
        defaults = DEFAULTS[protocol]
        if name not in defaults.lexicons:
            raise ValueError(f"{protocol} has no {name!r} lexicon; known: {sorted(defaults.lexicons)}")
        if not root or not os.path.isdir(root):
            raise FileNotFoundError(f"lexicon root folder not found: {root!r} (needed for the {name} lexicon)")
        if defaults.weighted_edit_distance and char_index is None:
            raise ValueError(f"the {protocol} lexicons need the recognition vocabulary (char_index)")
        self.protocol, self.name, self.root = protocol, name, root
        self._files: LexiconFiles = defaults.lexicons[name]
        self._full_dataset = defaults.full_lexicon_dataset
        self._char_index = char_index if defaults.weighted_edit_distance else None
        self._cache: Dict[str, _LoadedLexicon] = {}
        self.always_match = defaults.full_lexicon_dataset or (protocol == "icdar2015" and name == "generic")

    def _path(self, relative: str) -> str:
        return lexicon_path(self.root, relative)

    def _lexicon(self, image_id) -> _LoadedLexicon:
        key = str(image_id) if self._files.per_image else ""
        if key not in self._cache:
            words = self._path(self._files.words.format(image_id=image_id))
            pairs = self._path(self._files.pairs.format(image_id=image_id))
            self._cache[key] = _LoadedLexicon(words, pairs, self._full_dataset, self._char_index)
        return self._cache[key]

    def match(self, text: str, image_id: int, rec_prob: Optional[np.ndarray] = None) -> Optional[str]:
        """The lexicon spelling for ``text``, or None when the official matcher drops the instance."""
        lexicon = self._lexicon(image_id)
        query = text.upper()
        if lexicon.weighted is None:
            index = lexicon.nearest_plain(query)
            distance = 0.0
        else:
            if rec_prob is None:
                raise ValueError(f"image {image_id}: the {self.name} lexicon needs rec_prob for {text!r}")
            limit = START_DISTANCE if self.always_match else WEIGHTED_CUTOFF
            found: Optional[Tuple[float, int]] = lexicon.weighted.nearest(query, rec_prob, limit)
            index, distance = (None, 0.0) if found is None else (found[1], found[0])
        if index is None:
            # nothing below the start distance: the official matcher returns '' (or drops, for IC15 weak/strong)
            return "" if self.always_match else None
        if not self.always_match and not distance < WEIGHTED_CUTOFF:
            return None
        return lexicon.pairs[lexicon.words[index]]


def default_lexicon_roots(gt_zip: Optional[str]) -> List[str]:
    """Where lexicons are looked for without ``--lexicon-root``, in order.

    ``lexicons/`` beside the GT zip (the official ``evaluation/`` layout, and this project's generic datasets),
    then ``$DETECTRON2_DATASETS/evaluation/lexicons`` (default ``datasets/evaluation/lexicons``; datasets/README.md).
    """
    roots = [os.path.join(os.path.dirname(os.path.abspath(gt_zip)), "lexicons")] if gt_zip else []
    roots.append(os.path.join(os.environ.get("DETECTRON2_DATASETS", "datasets"), "evaluation", "lexicons"))
    return roots


def lexicon_files_missing(protocol: str, name: str, root: str) -> List[str]:
    """Paths of the word and pair lists of a lexicon that do not exist under ``root`` (per-image: their folder)."""
    files = DEFAULTS[protocol].lexicons[name]
    paths = [lexicon_path(root, files.words), lexicon_path(root, files.pairs)]
    if files.per_image:
        paths = sorted({os.path.dirname(p) for p in paths})
    return [p for p in paths if not os.path.exists(p)]
