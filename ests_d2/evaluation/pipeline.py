"""End-to-end scoring of neutral predictions: GT sources, lexicons, one official scoring run per setting."""
import logging
import os
from collections import OrderedDict
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence

from ests_d2.structures import CharVocabulary

from .lexicon import LexiconMatcher
from .predictions import ImagePrediction
from .protocol import EvalSettings
from .rrc_format import TextLine, member_key, parse_contents, read_zip, write_zip
from .scoring import MatchCounts, ScoreResult, score
from .submission import build_submission

logger = logging.getLogger(__name__)


def vocabulary_char_index(voc_size: int = 97, vocabulary: Optional[CharVocabulary] = None) -> Dict[str, int]:
    """Character -> ``rec_prob`` column: the vocabulary's characters, then the unknown glyph."""
    return (vocabulary or CharVocabulary.from_config(voc_size)).char_index()


def load_gt_zip(path: str) -> Dict[str, List[TextLine]]:
    if not os.path.isfile(path):
        raise FileNotFoundError(f"GT zip not found: {path}")
    return read_zip(path, strict=False)


def parse_files(files: Dict[str, List[str]], where: str) -> Dict[str, List[TextLine]]:
    """Member-name-keyed lines -> the official sample keys with parsed lines (as read back from a zip)."""
    return {member_key(name): parse_contents("\n".join(lines), f"{where}:{name}") for name, lines in files.items()}


@dataclass
class RunResult:
    """One official scoring run: its settings, both blocks the official script prints, and per-image detail."""

    settings: EvalSettings
    scored: ScoreResult  # .det: detection block, .e2e: end-to-end block, .images: per-sample matches
    predictions: Dict[str, List[TextLine]]  # the run's det-zip lines as scored, per sample key
    files: Optional[Dict[str, List[str]]] = None  # the run's det-zip members (None: not built here)

    @property
    def reported(self) -> MatchCounts:
        """The block the official evaluator returns for this task: detection for task 0, e2e for task 1."""
        return self.scored.det if self.settings.task == "det" else self.scored.e2e


def evaluate_runs(
    images: Sequence[ImagePrediction],
    gt: Dict[str, List[TextLine]],
    runs: Sequence[EvalSettings],
    lexicon_root: Optional[str] = None,
    voc_size: int = 97,
    output_dir: Optional[str] = None,
    gt_name: str = "GT",
    progress=None,
    vocabulary: Optional[CharVocabulary] = None,
) -> List[RunResult]:
    """Score ``images`` once per run, as the official code does for one (task, lexicon) configuration.

    With ``output_dir``, each run's official zip is written there as ``{run name}_det.zip``. ``vocabulary``
    (default: EN with ``voc_size`` classes) maps characters to ``rec_prob`` columns for the weighted edit
    distance.
    """
    out = []
    matchers: Dict[str, LexiconMatcher] = {}
    done: Dict[tuple, RunResult] = {}
    for run in runs:
        key = _submission_key(run)
        if key in done:  # e.g. IC15 task 0 and task 1 without lexicon: no rec filter, the same files
            out.append(RunResult(run, done[key].scored, done[key].predictions, done[key].files))
            logger.info("%s -> the det zip of %s (same filters)", run.describe(), done[key].settings.run_name)
            if output_dir:
                write_zip(os.path.join(output_dir, f"{run.run_name}_det.zip"), done[key].files)
            continue
        lexicon = None
        if run.lexicon:
            if run.lexicon not in matchers:
                char_index = vocabulary_char_index(voc_size, vocabulary) if run.defaults.weighted_edit_distance else None
                matchers[run.lexicon] = LexiconMatcher(run.protocol, run.lexicon, lexicon_root, char_index)
            lexicon = matchers[run.lexicon]
        files = build_submission(images, run, lexicon, progress=_labelled(progress, f"{run.run_name} (convert)"))
        if output_dir:
            write_zip(os.path.join(output_dir, f"{run.run_name}_det.zip"), files)
        predictions = parse_files(files, run.run_name)
        result = RunResult(run, score(gt, predictions, run.word_spotting, gt_name), predictions, files)
        done[key] = result
        block = result.reported
        logger.info("%s -> %s (matched %d, care GT %d, care det %d)", run.describe(),
                    _fmt(block.metrics()), block.matched, block.care_gt, block.care_det)
        out.append(result)
    return out


def _submission_key(run: EvalSettings) -> tuple:
    """Everything that decides a run's det zip and its scores; runs with equal keys give identical results."""
    rec_filter = run.rec_confidence if run.task == "e2e" and run.rec_confidence > 0 else None
    return run.protocol, run.det_threshold, rec_filter, run.lexicon, run.word_spotting


def run_evaluation(
    images: Sequence[ImagePrediction],
    gt: Dict[str, List[TextLine]],
    runs: Sequence[EvalSettings],
    lexicon_root: Optional[str] = None,
    voc_size: int = 97,
    output_dir: Optional[str] = None,
    gt_name: str = "GT",
    progress=None,
    vocabulary: Optional[CharVocabulary] = None,
) -> "OrderedDict[str, Dict[str, float]]":
    """``{run name: {precision, recall, hmean}}`` of the block the official evaluator returns per run.

    A "det" run reports the detection block of a task-0 run; "e2e" runs report the end-to-end block of
    a task-1 run (optionally with a lexicon). Arguments as :func:`evaluate_runs`.
    """
    results = evaluate_runs(images, gt, runs, lexicon_root, voc_size, output_dir, gt_name, progress, vocabulary)
    return OrderedDict((r.settings.run_name, r.reported.metrics()) for r in results)


def _labelled(progress, label):
    if progress is None:
        return None
    return lambda it: progress(it, desc=label)


def _fmt(metrics: Dict[str, float]) -> str:
    return ", ".join(f"{k}={v:.4f}" for k, v in metrics.items())
