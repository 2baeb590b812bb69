"""Per-dataset settings of the official ESTS text-spotting evaluation (docs/EVALUATION.md).

The official ``TextEvaluator`` picks its GT zip, thresholds, word-spotting flag and lexicon files from a
substring of the dataset name. Here the dataset kind is explicit (``eval_protocol`` metadata) and each
official value can be overridden; ``-1`` (numbers) or ``None`` means "the dataset's official default".
"""
from dataclasses import dataclass, field
from typing import Dict, Optional, Tuple

PROTOCOLS = ("totaltext", "ctw1500", "icdar2015", "generic")
# The one set of dataset names (CLI, JSON "dataset" field, dataset metadata), case-insensitive.
PROTOCOL_ALIASES = {
    "tt": "totaltext", "total_text": "totaltext", "total-text": "totaltext",
    "ctw": "ctw1500", "ctw-1500": "ctw1500", "scut-ctw1500": "ctw1500",
    "ic15": "icdar2015", "icdar15": "icdar2015",
}
TASKS = ("det", "e2e")


@dataclass(frozen=True)
class LexiconFiles:
    """One official lexicon: the word list and its pair list, relative to the lexicon root.

    ``per_image`` lexicons (IC15 "strong") hold a ``{image_id}`` placeholder in both names.
    """

    words: str
    pairs: str
    per_image: bool = False


@dataclass(frozen=True)
class DatasetDefaults:
    gt_zip_name: str  # file name of the official GT zip (for locating it next to the lexicons)
    word_spotting: bool  # Total-Text only: GT normalisation + extra don't-care rules in e2e
    det_threshold: float  # keep round(score, 3) >= this
    rec_confidence: float  # e2e task: drop instances whose mean rec_score is below this
    weighted_edit_distance: bool  # IC15: lexicon distance weighted by per-character probabilities
    full_lexicon_dataset: bool  # TT/CTW: the nearest lexicon word is always taken; pair keys may hold blanks
    lexicons: Dict[str, LexiconFiles] = field(default_factory=dict)


_IC15_STRONG = LexiconFiles(
    "ic15/new_strong_lexicon/new_voc_img_{image_id}.txt",
    "ic15/new_strong_lexicon/pair_voc_img_{image_id}.txt",
    per_image=True,
)

DEFAULTS: Dict[str, DatasetDefaults] = {
    "totaltext": DatasetDefaults(
        "gt_totaltext.zip", True, 0.415, 0.975, False, True,
        {
            "full": LexiconFiles("totaltext/tt_lexicon.txt", "totaltext/tt_pair_list.txt"),
            "weak": LexiconFiles("totaltext/weak_voc_new.txt", "totaltext/weak_voc_pair_list.txt"),
        },
    ),
    "ctw1500": DatasetDefaults(
        "gt_ctw1500.zip", False, 0.41, 0.98, False, True,
        {"full": LexiconFiles("ctw1500/ctw1500_lexicon.txt", "ctw1500/ctw1500_pair_list.txt")},
    ),
    "icdar2015": DatasetDefaults(
        "gt_icdar2015.zip", False, 0.243, 0.0, True, False,
        {
            "generic": LexiconFiles("ic15/GenericVocabulary_new.txt", "ic15/GenericVocabulary_pair_list.txt"),
            "weak": LexiconFiles("ic15/ch4_test_vocabulary_new.txt", "ic15/ch4_test_vocabulary_pair_list.txt"),
            "strong": _IC15_STRONG,
        },
    ),
    # The official fallback branch for other dataset names: threshold 0.415, no recognition filter.
    # Its lexicon is this project's generic layout (datasets/README.md): nearest word, plain edit distance.
    "generic": DatasetDefaults(
        "", False, 0.415, 0.0, False, True, {"full": LexiconFiles("lexicon.txt", "pair_list.txt")},
    ),
}

# Official ``lexicon_type`` numbers, accepted as aliases of the names above.
LEXICON_TYPE_NAMES = {
    "totaltext": {1: "full", 2: "weak"},
    "ctw1500": {1: "full"},
    "icdar2015": {1: "generic", 2: "weak", 3: "strong"},
    "generic": {1: "full"},
}


def protocol_names() -> str:
    """The accepted dataset names with their aliases, for messages and --help."""
    return "; ".join(
        name + "".join(f" / {a}" for a, target in PROTOCOL_ALIASES.items() if target == name) for name in PROTOCOLS
    )


def canonical_protocol(name: str) -> str:
    key = PROTOCOL_ALIASES.get(str(name).lower(), str(name).lower())
    if key not in PROTOCOLS:
        raise ValueError(f"unknown dataset / protocol {name!r}; expected one of: {protocol_names()}")
    return key


def canonical_lexicon(protocol: str, lexicon) -> Optional[str]:
    """Lexicon name ("full", "weak", ...) or None for no lexicon; accepts the official type numbers."""
    if lexicon in (None, "", "none", 0, "0"):
        return None
    if isinstance(lexicon, int) or str(lexicon).isdigit():
        names = LEXICON_TYPE_NAMES.get(protocol, {})
        if int(lexicon) not in names:
            raise ValueError(f"{protocol} has no official lexicon_type {lexicon}; known: {names}")
        return names[int(lexicon)]
    lexicon = str(lexicon).lower()
    if lexicon not in DEFAULTS[protocol].lexicons:
        known = sorted(DEFAULTS[protocol].lexicons) or "none"
        raise ValueError(f"{protocol} has no {lexicon!r} lexicon; known: {known}")
    return lexicon


@dataclass(frozen=True)
class EvalSettings:
    """Everything that decides one scoring run: the official defaults with any overrides applied."""

    protocol: str
    task: str  # "det": task 0 (no recognition filter); "e2e": task 1
    det_threshold: float
    rec_confidence: float
    word_spotting: bool
    lexicon: Optional[str] = None

    @property
    def defaults(self) -> DatasetDefaults:
        return DEFAULTS[self.protocol]

    @property
    def run_name(self) -> str:
        """Key of this run in the results dict: text_det, text_e2e, text_e2e_full, ..."""
        return f"text_{self.task}" + (f"_{self.lexicon}" if self.lexicon else "")

    def describe(self) -> str:
        rec = f"rec_confidence={self.rec_confidence:g}" if self.task == "e2e" else "no rec filter"
        return (
            f"{self.run_name}: protocol={self.protocol} task={self.task} det_threshold={self.det_threshold:g} "
            f"{rec} lexicon={self.lexicon or 'none'} word_spotting={self.word_spotting}"
        )


def resolve_settings(
    protocol: str,
    task: str,
    det_threshold: float = -1,
    rec_confidence: float = -1,
    word_spotting: int = -1,
    lexicon=None,
) -> EvalSettings:
    """Official defaults of ``protocol`` with overrides (``-1`` = keep the official value)."""
    protocol = canonical_protocol(protocol)
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; expected one of {TASKS}")
    d = DEFAULTS[protocol]
    return EvalSettings(
        protocol=protocol,
        task=task,
        det_threshold=d.det_threshold if det_threshold is None or det_threshold < 0 else float(det_threshold),
        rec_confidence=d.rec_confidence if rec_confidence is None or rec_confidence < 0 else float(rec_confidence),
        word_spotting=d.word_spotting if word_spotting is None or int(word_spotting) < 0 else bool(word_spotting),
        lexicon=canonical_lexicon(protocol, lexicon),
    )


def resolve_runs(protocol: str, tasks, lexicons, **overrides) -> Tuple[EvalSettings, ...]:
    """The runs to report: one per task without lexicon, plus one e2e run per requested lexicon."""
    runs = [resolve_settings(protocol, t, **overrides) for t in tasks]
    runs += [resolve_settings(protocol, "e2e", lexicon=lex, **overrides) for lex in lexicons]
    return tuple(runs)
