"""Scoring of official per-image files against a GT zip (``text_eval_main``, docs/EVALUATION.md step 5).

Greedy, text-blind matching with IoU > 0.5 in (GT order x detection order); a detection is don't care
when more than half of its own area lies inside one don't-care GT; word spotting (Total-Text) adds GT
don't-care rules and normalises the GT (never the detection) for the end-to-end pass; detection-only is
a second independent pass that only knows ``###``.
"""
from dataclasses import dataclass, field
from typing import Dict, List, Mapping, Tuple

import numpy as np

from .polygon_ops import intersection_areas, regions_and_boxes
from .rrc_format import DONT_CARE, RRCFormatError, TextLine

IOU_THRESHOLD = 0.5
AREA_PRECISION_THRESHOLD = 0.5
MIN_CARE_WORD_LENGTH = 3
# transcription_match: one of these may be dropped from the start and/or the end of the GT.
SPECIAL_CHARACTERS = "!?.:,*\"()\u00b7[]/'"
# Word spotting: replaced by blanks in the GT before the dictionary test.
WORD_SPOTTING_SEPARATORS = "'!?.:,*\"()\u00b7[]/"
_WORD_SPOTTING_RANGES = ((ord("a"), ord("z")), (ord("A"), ord("Z")), (0xC0, 0x1BF), (0x1C4, 0x24F), (0x386, 0x3FF))
_WORD_SPOTTING_FORBIDDEN = "\u00d7\u00f7\u00b7"


def normalize_word_spotting_gt(text: str) -> str:
    """Drop one final 's / 'S, strip '-' at both ends, blank the separators, strip."""
    if text.endswith("'s") or text.endswith("'S"):
        text = text[:-2]
    text = text.strip("-")
    for ch in WORD_SPOTTING_SEPARATORS:
        text = text.replace(ch, " ")
    return text.strip()


def is_word_spotting_care(text: str) -> bool:
    """Whether a (non-###) GT transcription stays a care word under the word-spotting rules."""
    text = normalize_word_spotting_gt(text)
    if " " in text or len(text) < MIN_CARE_WORD_LENGTH:
        return False
    for ch in text:
        if ch in _WORD_SPOTTING_FORBIDDEN:
            return False
        code = ord(ch)
        if ch != "-" and not any(lo <= code <= hi for lo, hi in _WORD_SPOTTING_RANGES):
            return False
    return True


def transcription_match(gt: str, det: str) -> bool:
    """Equal, or equal after dropping one special character at the start and/or end of the GT only.

    The official code raises IndexError on an empty GT with a non-empty detection and counts it as wrong.
    """
    if gt == det:
        return True
    if not gt:
        return False
    first, last = gt[0] in SPECIAL_CHARACTERS, gt[-1] in SPECIAL_CHARACTERS
    return (
        (first and gt[1:] == det)
        or (last and gt[:-1] == det)
        or (first and last and gt[1:-1] == det)
    )


@dataclass
class MatchCounts:
    matched: int = 0
    care_gt: int = 0
    care_det: int = 0

    def add(self, other: "MatchCounts") -> None:
        self.matched += other.matched
        self.care_gt += other.care_gt
        self.care_det += other.care_det

    def metrics(self) -> Dict[str, float]:
        """Global P, R, H; each 0 when its denominator is 0 (so no detections gives P = 0)."""
        recall = self.matched / self.care_gt if self.care_gt else 0.0
        precision = self.matched / self.care_det if self.care_det else 0.0
        hmean = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        return {"precision": precision, "recall": recall, "hmean": hmean}

    def report(self) -> Dict[str, float]:
        """P, R, H and the counts behind them."""
        return {**self.metrics(), "matched": self.matched, "gt_care": self.care_gt, "det_care": self.care_det}


def _dont_care_detections(inter, det_areas, gt_dont_care: np.ndarray) -> np.ndarray:
    """(D,) bool: more than half of the detection's own area inside one don't-care GT."""
    if not gt_dont_care.any() or inter.shape[1] == 0:
        return np.zeros(inter.shape[1], dtype=bool)
    with np.errstate(divide="ignore", invalid="ignore"):
        frac = np.where(det_areas[None, :] == 0, 0.0, inter[gt_dont_care] / det_areas[None, :])
    return (frac > AREA_PRECISION_THRESHOLD).any(axis=0)


def _greedy_pairs(iou: np.ndarray, gt_ignored: np.ndarray, det_ignored: np.ndarray):
    """(gt, det) pairs of the official greedy pass: GT order, then the first free detection with IoU > 0.5."""
    free = ~det_ignored
    pairs = []
    for g in np.nonzero(~gt_ignored)[0]:
        candidates = free & (iou[g] > IOU_THRESHOLD)
        if candidates.any():
            d = int(np.argmax(candidates))
            free[d] = False
            pairs.append((int(g), d))
    return pairs


@dataclass
class ImageMatches:
    """The official matching of one image, kept so that per-image reports and pictures can show it.

    Two independent passes: "det" knows only ``###`` as don't care; "e2e" adds the word-spotting rules
    (Total-Text) and compares ``gt_texts`` (GT normalised for word spotting) with the detection text.
    """

    gt_dont_care_det: np.ndarray  # (G,) bool
    gt_dont_care_e2e: np.ndarray  # (G,) bool
    det_dont_care_det: np.ndarray  # (D,) bool: > 0.5 of its area inside one don't-care GT
    det_dont_care_e2e: np.ndarray  # (D,) bool
    det_pairs: List[Tuple[int, int]]  # (gt, det) of the detection pass
    e2e_pairs: List[Tuple[int, int, bool]]  # (gt, det, text correct) of the end-to-end pass
    gt_texts: List[str]  # GT texts as the e2e pass compares them

    def counts(self) -> Tuple["MatchCounts", "MatchCounts"]:
        """(e2e counts, detection-only counts)."""
        e2e = MatchCounts(sum(ok for _, _, ok in self.e2e_pairs), *_care(self.gt_dont_care_e2e, self.det_dont_care_e2e))
        det = MatchCounts(len(self.det_pairs), *_care(self.gt_dont_care_det, self.det_dont_care_det))
        return e2e, det


def _care(gt_dont_care: np.ndarray, det_dont_care: np.ndarray) -> Tuple[int, int]:
    return len(gt_dont_care) - int(gt_dont_care.sum()), len(det_dont_care) - int(det_dont_care.sum())


def match_image(gt_lines: List[TextLine], det_lines: List[TextLine], word_spotting: bool, where: str) -> ImageMatches:
    """Don't-care flags and matched pairs of both official passes over one image."""
    gt_texts = [line.text for line in gt_lines]
    gt_dc_det = np.array([t == DONT_CARE for t in gt_texts], dtype=bool)
    gt_dc_e2e = gt_dc_det.copy()
    if word_spotting:
        for i, t in enumerate(gt_texts):
            if not gt_dc_e2e[i]:
                if is_word_spotting_care(t):
                    gt_texts[i] = normalize_word_spotting_gt(t)
                else:
                    gt_dc_e2e[i] = True
    n_gt, n_det = len(gt_lines), len(det_lines)
    det_dc_e2e = det_dc_det = np.zeros(n_det, dtype=bool)
    det_pairs, e2e_pairs = [], []
    # GT polygons are built even without detections: a malformed GT stops the official run too.
    gt_regions, gt_areas, gt_boxes = regions_and_boxes([l.points for l in gt_lines], f"{where} (GT)")
    if n_det:
        det_regions, det_areas, det_boxes = regions_and_boxes([l.points for l in det_lines], where)
        inter = intersection_areas(gt_regions, gt_boxes, det_regions, det_boxes)
        det_dc_e2e = _dont_care_detections(inter, det_areas, gt_dc_e2e)
        det_dc_det = _dont_care_detections(inter, det_areas, gt_dc_det)
        if n_gt:
            union = gt_areas[:, None] + det_areas[None, :] - inter
            with np.errstate(divide="ignore", invalid="ignore"):
                iou = np.where(union == 0, 0.0, inter / union)
            for g, d in _greedy_pairs(iou, gt_dc_e2e, det_dc_e2e):
                gt_text, det_text = gt_texts[g].upper(), det_lines[d].text.upper()
                ok = gt_text == det_text if word_spotting else transcription_match(gt_text, det_text)
                e2e_pairs.append((g, d, bool(ok)))
            det_pairs = _greedy_pairs(iou, gt_dc_det, det_dc_det)
    return ImageMatches(gt_dc_det, gt_dc_e2e, det_dc_det, det_dc_e2e, det_pairs, e2e_pairs, gt_texts)


@dataclass
class ScoreResult:
    e2e: MatchCounts
    det: MatchCounts
    images: Dict[str, ImageMatches] = field(default_factory=dict)  # per GT sample key, in GT order


def score(
    gt: Mapping[str, List[TextLine]],
    predictions: Mapping[str, List[TextLine]],
    word_spotting: bool,
    gt_name: str = "GT",
    progress=None,
) -> ScoreResult:
    """Score per-image prediction lines against GT lines, both keyed by the official member key.

    Every GT sample is scored (a missing prediction means no detections); a prediction key absent
    from the GT is an error, as in the official script.

    Args:
        progress: optional callable wrapping an iterable (e.g. ``tqdm``).
    """
    unknown = [k for k in predictions if k not in gt]
    if unknown:
        raise RRCFormatError(
            f"predictions for {len(unknown)} sample(s) not present in {gt_name}, e.g. {unknown[:5]} "
            "(member names must be '{image_id:07d}.txt' of GT members)"
        )
    result = ScoreResult(MatchCounts(), MatchCounts())
    keys = list(gt)
    for key in progress(keys) if progress else keys:
        matches = match_image(gt[key], predictions.get(key, []), word_spotting, f"sample {key}")
        result.images[key] = matches
        e2e, det = matches.counts()
        result.e2e.add(e2e)
        result.det.add(det)
    return result
