"""The ICDAR2015 lexicon distance: an edit distance weighted by the recogniser's per-character probabilities.

Semantics of the official numba function (docs/EVALUATION.md, "Lexicon matching" and oddity 5), for a
prediction ``q`` (upper-cased, length m) against a lexicon word ``w`` (upper-cased, length n):

- ``P_j(c) = max(prob[j, id(upper(c))], prob[j, id(lower(c))])``, row ``j`` = index in the decoded string;
- dp is float32 with unit costs on the first row and column;
- deleting ``q[j]`` costs ``P_j(q[j])`` (float32 sum);
- inserting before ``q[j]`` costs ``(P_j(q[j]) + P_{j+1}(q[j+1])) / 2`` (``P_j(q[j])`` for the last column);
- substituting ``q[j]`` by ``c != q[j]`` costs ``max(1 - 5 * P_j(c) / P_j(q[j]), 0)``;
- insert and substitute candidates are summed in float64 (numba promotes ``float32 * int``), the
  minimum is stored back as float32.

A query is matched against a whole lexicon (88k words for the generic one) with a prefix trie walked
level by level, vectorised over the trie nodes of a level. Subtrees whose best row value already exceeds
the best distance found so far (or the search bound) are pruned: every cost is non-negative, so a row
minimum bounds all completions (also in float arithmetic, rounding being monotone). The result is the
first word in file order with the smallest float32 distance, as in the official loop; it is bit-identical
to the numba function (checked on 13k pairs against the official code).
"""
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

_F32 = np.float32
_SEARCH_BOUNDS = (1.0, 2.5)  # first, cheap search bounds before the caller's limit


def char_probabilities(query: str, alphabet: Sequence[str], probs: np.ndarray, char_index: Dict[str, int]):
    """(m, len(alphabet)) float32 ``P_j(c)`` for every decoded position j and character c."""
    up = np.array([char_index[c.upper()] for c in alphabet], dtype=np.int64)
    low = np.array([char_index[c.lower()] for c in alphabet], dtype=np.int64)
    rows = np.asarray(probs, dtype=_F32)[: len(query)]
    return np.maximum(rows[:, up], rows[:, low])


class _QueryCosts:
    """Delete / insert / substitute costs of one prediction against an alphabet."""

    def __init__(self, query: str, probs: np.ndarray, alphabet: Sequence[str], char_index: Dict[str, int]):
        m = len(query)
        if len(probs) < m:
            raise ValueError(f"rec_prob has {len(probs)} rows but the text {query!r} needs {m}")
        own = char_probabilities(query, query, probs, char_index)[np.arange(m), np.arange(m)]  # P_j(q[j])
        self.delete = own.astype(_F32)  # (m,) float32
        pair_sum = (own[:-1] + own[1:]).astype(_F32)  # float32 sum, then /2 exactly in float64
        self.insert = np.concatenate([pair_sum.astype(np.float64) / 2, own[-1:].astype(np.float64)])
        other = char_probabilities(query, alphabet, probs, char_index)  # (m, A)
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = (other / own[:, None]).astype(_F32)
            # fmax: a zero probability (numba would raise ZeroDivisionError) costs 0 instead of NaN.
            sub = np.fmax(1.0 - ratio.astype(np.float64) * 5, 0.0)
        same = np.array(list(query))[:, None] == np.array(list(alphabet), dtype=object)[None, :]
        sub[same] = 0.0
        self.substitute = sub  # (m, A) float64
        self.m = m

    def next_rows(self, prev: np.ndarray, codes: np.ndarray, depth: int) -> np.ndarray:
        """dp rows at ``depth`` for nodes whose row at ``depth - 1`` is ``prev`` (N, m+1) and char ``codes``."""
        m = self.m
        cur = np.empty_like(prev)
        cur[:, 0] = depth
        if m == 0:
            return cur
        via_insert = prev[:, 1:].astype(np.float64) + self.insert[None, :]
        via_substitute = prev[:, :-1].astype(np.float64) + self.substitute[:, codes].T
        best = np.minimum(via_insert, via_substitute).astype(_F32)
        for j in range(1, m + 1):  # the delete term chains along the row
            np.minimum(best[:, j - 1], cur[:, j - 1] + self.delete[j - 1], out=cur[:, j])
        return cur


def weighted_edit_distance(query: str, word: str, probs: np.ndarray, char_index: Dict[str, int]) -> np.float32:
    """Distance of one (upper-cased) prediction to one (upper-cased) word; the plain reference form."""
    alphabet = sorted(set(word)) or ["A"]
    costs = _QueryCosts(query, probs, alphabet, char_index)
    codes = {c: i for i, c in enumerate(alphabet)}
    row = np.arange(len(query) + 1, dtype=_F32)[None, :]
    for depth, ch in enumerate(word, start=1):
        row = costs.next_rows(row, np.array([codes[ch]]), depth)
    return row[0, -1]


class _Trie:
    """Prefix trie of the distinct upper-cased words, stored level by level as arrays."""

    def __init__(self, words: Sequence[str]):
        first_index: Dict[str, int] = {}
        for i, w in enumerate(words):
            first_index.setdefault(w, i)
        self.alphabet = sorted({c for w in first_index for c in w})
        code = {c: i for i, c in enumerate(self.alphabet)}
        self.empty_word_index = first_index.get("", -1)
        self.codes: List[np.ndarray] = []  # per level: (N,) alphabet code of the node's last char
        self.terminal: List[np.ndarray] = []  # per level: (N,) file index of the word ending here, or -1
        self.child_ptr: List[np.ndarray] = []  # per level: (N+1,) children range in the next level
        prev_ids = {"": 0}
        depth = 1
        while True:
            prefixes = sorted({w[:depth] for w in first_index if len(w) >= depth})
            if not prefixes:
                break
            parents = np.array([prev_ids[p[:-1]] for p in prefixes], dtype=np.int64)
            self.child_ptr.append(np.searchsorted(parents, np.arange(len(prev_ids) + 1)))
            self.codes.append(np.array([code[p[-1]] for p in prefixes], dtype=np.int64))
            self.terminal.append(np.array([first_index.get(p, -1) for p in prefixes], dtype=np.int64))
            prev_ids = {p: i for i, p in enumerate(prefixes)}
            depth += 1


def _children(child_ptr: np.ndarray, parents: np.ndarray):
    """Indices of all children of ``parents`` and, for each child, its position in ``parents``."""
    starts, ends = child_ptr[parents], child_ptr[parents + 1]
    counts = ends - starts
    owner = np.repeat(np.arange(len(parents)), counts)
    offsets = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
    return starts[owner] + offsets, owner


class WeightedLexiconSearch:
    """Nearest lexicon word under the weighted edit distance, first in file order on ties."""

    def __init__(self, words_upper: Sequence[str], char_index: Dict[str, int]):
        self.words = list(words_upper)
        self.char_index = char_index
        for w in set(self.words):
            for c in w:
                if c.upper() not in char_index or c.lower() not in char_index:
                    raise ValueError(f"lexicon word {w!r} has a character {c!r} outside the recognition vocabulary")
        self._trie = _Trie(self.words)

    def nearest(self, query: str, probs: np.ndarray, limit: float) -> Optional[Tuple[float, int]]:
        """(distance, word index) of the first word with the smallest distance below ``limit``, or None.

        Searches with growing bounds (1, 2.5, then ``limit``): a word found below a bound is the global
        best, and tight bounds prune almost the whole trie for the usual, nearly correct, predictions.
        """
        costs = _QueryCosts(query, probs, self._trie.alphabet, self.char_index)
        for bound in [b for b in _SEARCH_BOUNDS if b < limit] + [limit]:
            found = self._search(costs, bound)
            if found is not None:
                return found
        return None

    def _search(self, costs: _QueryCosts, limit: float) -> Optional[Tuple[float, int]]:
        trie, m = self._trie, costs.m
        best_d, best_i = np.inf, -1

        def consider(d, i):
            nonlocal best_d, best_i
            if d < limit and (d < best_d or (d == best_d and i < best_i)):
                best_d, best_i = d, i

        if trie.empty_word_index >= 0:
            consider(float(m), trie.empty_word_index)
        if not trie.codes:
            return None if best_i < 0 else (best_d, best_i)
        nodes = np.arange(len(trie.codes[0]))
        rows = np.repeat(np.arange(m + 1, dtype=_F32)[None, :], len(nodes), axis=0)
        for depth in range(1, len(trie.codes) + 1):
            rows = costs.next_rows(rows, trie.codes[depth - 1][nodes], depth)
            terminal = trie.terminal[depth - 1][nodes]
            ends = np.nonzero(terminal >= 0)[0]
            if len(ends):
                dist = rows[ends, m]
                closest = dist.min()
                consider(float(closest), int(terminal[ends][dist == closest].min()))
            if depth == len(trie.codes):
                break
            row_min = rows.min(axis=1)
            keep = (row_min <= best_d) & (row_min < limit)
            nodes, rows = nodes[keep], rows[keep]
            if len(nodes) == 0:
                break
            nodes, owner = _children(trie.child_ptr[depth], nodes)
            rows = rows[owner]
        return None if best_i < 0 else (best_d, best_i)
