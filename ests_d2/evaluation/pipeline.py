"""End-to-end scoring of neutral predictions: GT sources, lexicons, one scoring run per setting."""
import logging
import os
from collections import OrderedDict
from typing import Dict, List, Optional, Sequence

import numpy as np

from ests_d2.structures import CharVocabulary

from .lexicon import LexiconMatcher
from .predictions import ImagePrediction
from .protocol import EvalSettings
from .rrc_format import TextLine, member_key, parse_contents, read_zip, write_zip
from .scoring import score
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
    """Score ``images`` once per run; returns ``{run name: {precision, recall, hmean}}``.

    A "det" run reports the detection block of a task-0 run; "e2e" runs report the end-to-end block of
    a task-1 run (optionally with a lexicon). With ``output_dir``, each run's official zip is written
    there as ``{run name}_det.zip``. ``vocabulary`` (default: EN with ``voc_size`` classes) maps characters
    to ``rec_prob`` columns for the weighted edit distance.
    """
    results = OrderedDict()
    matchers: Dict[str, LexiconMatcher] = {}
    for run in runs:
        lexicon = None
        if run.lexicon:
            if run.lexicon not in matchers:
                char_index = vocabulary_char_index(voc_size, vocabulary) if run.defaults.weighted_edit_distance else None
                matchers[run.lexicon] = LexiconMatcher(run.protocol, run.lexicon, lexicon_root, char_index)
            lexicon = matchers[run.lexicon]
        files = build_submission(images, run, lexicon, progress=_labelled(progress, f"{run.run_name} (convert)"))
        if output_dir:
            write_zip(os.path.join(output_dir, f"{run.run_name}_det.zip"), files)
        scored = score(gt, parse_files(files, run.run_name), run.word_spotting, gt_name)
        block = scored.det if run.task == "det" else scored.e2e
        results[run.run_name] = block.metrics()
        logger.info("%s -> %s (matched %d, care GT %d, care det %d)", run.describe(),
                    _fmt(results[run.run_name]), block.matched, block.care_gt, block.care_det)
    return results


def _labelled(progress, label):
    if progress is None:
        return None
    return lambda it: progress(it, desc=label)


def _fmt(metrics: Dict[str, float]) -> str:
    return ", ".join(f"{k}={v:.4f}" for k, v in metrics.items())
