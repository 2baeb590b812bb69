"""Evaluation beyond the EN benchmarks: VinText, ReCTS and a generic protocol for any script.

Dataset metadata ``eval_protocol`` selects one of:

- ``"vintext"`` -- the official VinText evaluation: predictions decoded with the VinText letter encoding
  (the model's vocabulary does it), texts kept whole (the official ``de_ascii`` keeps every character for
  VinText), det threshold 0.415, e2e recognition-confidence filter 0.975, then the official RRC scoring *with*
  the Total-Text word-spotting rules, exactly as ``text_eval_script`` runs for VinText. Note the official quirk
  this keeps: those rules treat a GT word with a letter outside the Latin-1 / Latin Extended-A/B / Greek ranges
  as don't care, so words with letters from U+1E00.. (most toned Vietnamese vowels, e.g. 'ệ') are not scored.
- ``"rects"`` -- ReCTS (ICDAR 2019 task 3 / 4): detection P / R / H with the RRC matching (IoU > 0.5, greedy,
  ``###`` don't care) on instances scoring >= 0.35 (the official ReCTS submission threshold), and **1-NED**:
  ``1 - sum(d) / N`` over matched pairs (d = Levenshtein distance / longer length of the two texts), every
  unmatched care GT and every unmatched care detection (d = 1 each); N counts all three. Texts are compared
  after ``unicode_key``. The official repository only writes the submission file; the metric follows the
  published ReCTS definition.
- ``"unicode"`` -- end-to-end P / R / H for custom data in any script: the RRC matching and don't-care rules of
  the EN protocols, no word spotting, no ASCII stripping, det threshold 0.415, no recognition filter; a match
  needs equal texts after ``unicode_key`` (NFKC, so full-width forms equal their ASCII forms and composed
  equal decomposed letters, then ``casefold``).

``TEST.TEXT.DET_THRESHOLD`` / ``REC_CONFIDENCE`` / ``WORD_SPOTTING`` override the defaults as for the EN protocols.
"""
import logging
import os
import unicodedata
from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable, Dict, List, Mapping, Optional, Sequence

import numpy as np
from rapidfuzz.distance import Levenshtein


from . import predictions as neutral
from .pipeline import parse_files
from .polygon_ops import intersection_areas, regions_and_boxes
from .protocol import resolve_settings
from .rrc_format import DONT_CARE, TextLine, write_zip
from .scoring import _dont_care_detections, _greedy_pairs, score
from .submission import build_submission

logger = logging.getLogger(__name__)


def unicode_key(text: str) -> str:
    """The comparison form of a text for the script protocols: NFKC, then case-folded."""
    return unicodedata.normalize("NFKC", text).casefold()


@dataclass(frozen=True)
class ScriptProtocol:
    name: str
    det_threshold: float
    rec_confidence: float  # e2e task only; 0 = no filter
    word_spotting: bool
    metric: str  # "e2e": RRC end-to-end P / R / H; "ned": ReCTS 1-NED
    text_key: Callable[[str], str]  # applied to GT and predicted texts before comparing


SCRIPT_PROTOCOLS: Dict[str, ScriptProtocol] = {
    "vintext": ScriptProtocol("vintext", 0.415, 0.975, True, "e2e", str),
    "rects": ScriptProtocol("rects", 0.35, 0.0, False, "ned", unicode_key),
    "unicode": ScriptProtocol("unicode", 0.415, 0.0, False, "e2e", unicode_key),
}


def _keyed(lines: Mapping[str, List[TextLine]], text_key) -> Dict[str, List[TextLine]]:
    return {k: [TextLine(l.points, l.text if l.text == DONT_CARE else text_key(l.text)) for l in v]
            for k, v in lines.items()}


def _image_ned(gt_lines: List[TextLine], det_lines: List[TextLine], where: str):
    """(sum of normalised distances, number of terms) of one image (see the module docstring)."""
    gt_dc = np.array([l.text == DONT_CARE for l in gt_lines], dtype=bool)
    det_dc = np.zeros(len(det_lines), dtype=bool)
    pairs = []
    gt_regions, gt_areas, gt_boxes = regions_and_boxes([l.points for l in gt_lines], f"{where} (GT)")
    if det_lines:
        det_regions, det_areas, det_boxes = regions_and_boxes([l.points for l in det_lines], where)
        inter = intersection_areas(gt_regions, gt_boxes, det_regions, det_boxes)
        det_dc = _dont_care_detections(inter, det_areas, gt_dc)
        if gt_lines:
            union = gt_areas[:, None] + det_areas[None, :] - inter
            with np.errstate(divide="ignore", invalid="ignore"):
                iou = np.where(union == 0, 0.0, inter / union)
            pairs = _greedy_pairs(iou, gt_dc, det_dc)
    distance = sum(Levenshtein.normalized_distance(gt_lines[g].text, det_lines[d].text) for g, d in pairs)
    unmatched = int((~gt_dc).sum()) + int((~det_dc).sum()) - 2 * len(pairs)
    return distance + unmatched, len(pairs) + unmatched


def one_minus_ned(gt: Mapping[str, List[TextLine]], det: Mapping[str, List[TextLine]]) -> Dict[str, float]:
    """ReCTS 1-NED of per-image lines (texts already in comparison form); 1.0 when nothing is to be read."""
    total, terms = 0.0, 0
    for key in gt:
        d, n = _image_ned(gt[key], det.get(key, []), f"sample {key}")
        total, terms = total + d, terms + n
    return {"1-ned": 1.0 - total / terms if terms else 1.0}


def evaluate_script_protocol(images: Sequence[neutral.ImagePrediction], gt: Mapping[str, List[TextLine]],
                             protocol: str, tasks: Sequence[str] = ("det", "e2e"), det_threshold: float = -1,
                             rec_confidence: float = -1, word_spotting: int = -1,
                             output_dir: Optional[str] = None) -> "OrderedDict[str, Dict[str, float]]":
    """``{"text_det": {precision, recall, hmean}, "text_e2e": {...}}`` of ``images`` under ``protocol``.

    The e2e entry of ``"rects"`` is ``{"1-ned": ...}``. With ``output_dir`` each run's zip (UTF-8 texts) is
    written there as ``{run}_det.zip``.
    """
    spec = SCRIPT_PROTOCOLS[protocol]
    gt_keyed = _keyed(gt, spec.text_key)
    results = OrderedDict()
    for task in tasks:
        settings = resolve_settings(
            "generic", task,
            det_threshold=spec.det_threshold if det_threshold is None or det_threshold < 0 else det_threshold,
            rec_confidence=spec.rec_confidence if rec_confidence is None or rec_confidence < 0 else rec_confidence,
            word_spotting=int(spec.word_spotting) if word_spotting is None or word_spotting < 0 else word_spotting,
        )
        files = build_submission(images, settings, keep_non_ascii=True)
        if output_dir:
            write_zip(os.path.join(output_dir, f"{settings.run_name}_det.zip"), files)
        det = _keyed(parse_files(files, settings.run_name), spec.text_key)
        if task == "e2e" and spec.metric == "ned":
            results[settings.run_name] = one_minus_ned(gt_keyed, det)
        else:
            scored = score(gt_keyed, det, settings.word_spotting)
            results[settings.run_name] = (scored.det if task == "det" else scored.e2e).metrics()
        logger.info("%s (%s): %s", settings.run_name, protocol, results[settings.run_name])
    return results
