"""End-to-end scoring of neutral predictions: GT sources, lexicons, one scoring run per setting."""
import logging
import os
from collections import OrderedDict
from typing import Dict, Iterable, List, Optional, Sequence

import numpy as np

from ests_d2.data.text_utils import UNKNOWN_GLYPH, CharVocabulary, bezier_to_polygon

from .lexicon import LexiconMatcher
from .predictions import ImagePrediction
from .protocol import EvalSettings
from .rrc_format import (DONT_CARE, TextLine, format_line, member_key, member_name, parse_contents, read_zip,
                         write_zip)
from .scoring import score
from .submission import build_submission

logger = logging.getLogger(__name__)


def vocabulary_char_index(voc_size: int = 97) -> Dict[str, int]:
    """Character -> ``rec_prob`` column: the vocabulary's characters, then the unknown glyph."""
    vocab = CharVocabulary.from_config(voc_size)
    return {c: i for i, c in enumerate(vocab.characters + [UNKNOWN_GLYPH])}


def load_gt_zip(path: str) -> Dict[str, List[TextLine]]:
    if not os.path.isfile(path):
        raise FileNotFoundError(f"GT zip not found: {path}")
    return read_zip(path, strict=False)


def _float_text(v: float) -> str:
    return repr(float(np.float32(v)))  # reads back as the same float32


def gt_files_from_dataset_dicts(dataset_dicts: Iterable[dict], voc_size: int = 97) -> Dict[str, List[str]]:
    """Official-format GT lines ``{member name: lines}`` derived from detectron2 dataset dicts.

    Polygons come from ``polys`` (flat x, y list) or are sampled from the 16 ``beziers`` numbers
    (8 points per curve); the text is decoded from ``rec``; ``iscrowd`` = 1 marks ``###``.
    """
    vocab = CharVocabulary.from_config(voc_size)
    files: Dict[str, List[str]] = {}
    for d in dataset_dicts:
        name = member_name(d["image_id"])
        lines = files.setdefault(name, [])
        for k, ann in enumerate(d.get("annotations", [])):
            where = f"{d.get('file_name', d['image_id'])} annotation {k}"
            if "polys" in ann:
                flat = np.asarray(ann["polys"], dtype=np.float64).reshape(-1)
            elif "beziers" in ann:
                flat = bezier_to_polygon(np.asarray(ann["beziers"], dtype=np.float64))
            else:
                raise ValueError(f"{where}: needs 'polys' or 'beziers' to derive the evaluation GT")
            if len(flat) % 2 or len(flat) < 6:
                raise ValueError(f"{where}: polygon needs an even number >= 6 of coordinates, got {len(flat)}")
            if ann.get("iscrowd", 0):
                text = DONT_CARE
            elif "rec" in ann:
                text = vocab.decode(ann["rec"])
            else:
                raise ValueError(f"{where}: needs 'rec' (or iscrowd=1) to derive the evaluation GT")
            pts = [(_float_text(x), _float_text(y)) for x, y in flat.reshape(-1, 2)]
            lines.append(format_line(pts, text))
    return files


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
) -> "OrderedDict[str, Dict[str, float]]":
    """Score ``images`` once per run; returns ``{run name: {precision, recall, hmean}}``.

    A "det" run reports the detection block of a task-0 run; "e2e" runs report the end-to-end block of
    a task-1 run (optionally with a lexicon). With ``output_dir``, each run's official zip is written
    there as ``{run name}_det.zip``.
    """
    results = OrderedDict()
    matchers: Dict[str, LexiconMatcher] = {}
    for run in runs:
        lexicon = None
        if run.lexicon:
            if run.lexicon not in matchers:
                char_index = vocabulary_char_index(voc_size) if run.defaults.weighted_edit_distance else None
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
