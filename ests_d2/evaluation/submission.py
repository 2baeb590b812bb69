"""From neutral predictions to the official per-image submission files (docs/EVALUATION.md steps 2-4).

Per instance, in order: recognition-confidence filter (e2e task only), the official 0.1 floor and
``round(score, 3) >= threshold`` on the float32 score, lexicon, then the official text round trip:
the line ``"{image_id}: " + int()-truncated coordinates + rounded score + ",####" + ASCII-only text``
is re-read with ``split(': ')[1]`` (so the text is cut at its first ``': '``) and ``split(',####')``;
lines whose integer polygon shapely finds invalid are removed and counter-clockwise rings reversed.

The official code runs the lexicon before the threshold; doing it after gives the same scores (each
instance is matched on its own) and avoids matching queries that are thrown away. The only visible
difference: with the IC15 weak/strong lexicons an image whose every instance above 0.1 would be dropped
by the lexicon gets an empty member file here and none in the official zip (no effect on scores).
"""
import logging
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np
import shapely

from .lexicon import LexiconMatcher
from .polygon_ops import make_polygons
from .predictions import SCORE_FLOOR, ImagePrediction, InstancePrediction
from .protocol import EvalSettings
from .rrc_format import TEXT_SEPARATOR, format_line, member_name

logger = logging.getLogger(__name__)


def strip_non_ascii(text: str) -> str:
    """Official ``de_ascii``: delete every character >= U+0080 (so the unknown glyph vanishes)."""
    return "".join(c for c in text if ord(c) < 128)


def rounded_score(score: float) -> str:
    """``str(round(score, 3))`` of the float32 score, as written into the official temp line."""
    return str(round(float(np.float32(score)), 3))


def passes_rec_filter(inst: InstancePrediction, rec_confidence: float, where: str) -> bool:
    """e2e task: keep unless the float32 mean rec score is below the float32 threshold (torch semantics)."""
    if rec_confidence <= 0:
        return True  # a mean of probabilities is never below 0: no filter (IC15)
    if inst.rec_conf is None:
        raise ValueError(f"{where}: the e2e task needs rec_scores / rec_conf (rec_confidence={rec_confidence})")
    return not np.float32(inst.rec_conf) < np.float32(rec_confidence)


def _official_round_trip(image_id: int, inst: InstancePrediction, text: str, where: str, keep_non_ascii=False):
    """(integer points, text field) after the official temp-line write / re-read (steps 3.2-3.4).

    ``keep_non_ascii``: the official VinText branch of ``de_ascii`` keeps every character.
    """
    pts = np.asarray(inst.polygon, dtype=np.float32).reshape(-1, 2)
    if not np.isfinite(pts).all():
        raise ValueError(f"{where}: polygon has non-finite coordinates")
    coords = "".join(f"{int(x)},{int(y)}," for x, y in pts.astype(np.float64))
    text = text if keep_non_ascii else strip_non_ascii(text)
    temp = f"{image_id}: {coords}{rounded_score(inst.score)}{TEXT_SEPARATOR}{text}".strip()
    body = temp.split(": ")[1].strip()  # the ': ' cut
    parts = body.split(TEXT_SEPARATOR)
    temp_line = ",".join(parts[0].split(",")[:-1]) + TEXT_SEPARATOR + parts[1]  # score field dropped
    head, text_field = temp_line.strip().split(TEXT_SEPARATOR)[:2]  # as re-read by sort_detection
    ints = [int(v) for v in head.split(",")] if head else []
    if len(ints) % 2:
        raise ValueError(f"{where}: odd number of coordinates")
    return np.array(ints, dtype=np.int64).reshape(-1, 2), text_field


def official_lines(image_id: int, kept: Sequence[Tuple[InstancePrediction, str, str]],
                   keep_non_ascii: bool = False) -> List[str]:
    """Final det-zip lines of one image for ``(instance, text, where)`` items that passed the filters.

    Integer polygons that shapely finds invalid (or that have fewer than 3 points) are removed, and
    counter-clockwise rings are reversed, as the official ``sort_detection`` does.
    """
    trips = [_official_round_trip(image_id, inst, text, where, keep_non_ascii) for inst, text, where in kept]
    enough = [i for i, (pts, _) in enumerate(trips) if len(pts) >= 3]
    polygons = make_polygons([trips[i][0] for i in enough])
    valid = shapely.is_valid(polygons) if len(polygons) else np.zeros(0, bool)
    ccw = shapely.is_ccw(shapely.get_exterior_ring(polygons)) if len(polygons) else np.zeros(0, bool)
    good = {i: bool(c) for i, v, c in zip(enough, valid, ccw) if v}
    lines = []
    for i, (pts, text_field) in enumerate(trips):
        if i not in good:
            logger.debug("%s: invalid polygon removed: %s", kept[i][2], pts.tolist())
            continue
        if good[i]:
            pts = pts[::-1]
        lines.append(format_line(pts.tolist(), text_field))
    return lines


def official_line(image_id: int, inst: InstancePrediction, text: str, where: str) -> Optional[str]:
    """The final det-zip line of one instance, or None when shapely rejects its integer polygon."""
    lines = official_lines(image_id, [(inst, text, where)])
    return lines[0] if lines else None


def build_submission(
    images: Iterable[ImagePrediction],
    settings: EvalSettings,
    lexicon: Optional[LexiconMatcher] = None,
    progress=None,
    keep_non_ascii: bool = False,
) -> Dict[str, List[str]]:
    """``{member name: lines}`` of the official det zip for one run.

    Args:
        progress: optional callable wrapping an iterable (e.g. ``tqdm``).
        keep_non_ascii: keep every character of the texts (VinText and other scripts) instead of the official
            EN ``de_ascii``.
    """
    files: Dict[str, List[str]] = {}
    images = list(images)
    for image in progress(images) if progress else images:
        kept = []
        for k, inst in enumerate(image.instances):
            where = f"image {image.image_id} instance {k}"
            if settings.task == "e2e" and not passes_rec_filter(inst, settings.rec_confidence, where):
                continue
            if not float(np.float32(inst.score)) > SCORE_FLOOR:
                continue
            files.setdefault(member_name(image.image_id), [])  # created even if nothing passes the threshold
            if float(rounded_score(inst.score)) < settings.det_threshold:
                continue
            text = inst.text
            if lexicon is not None:
                text = lexicon.match(text, image.image_id, inst.rec_prob)
                if text is None:
                    continue
            kept.append((inst, text, where))
        if kept:
            files[member_name(image.image_id)].extend(official_lines(image.image_id, kept, keep_non_ascii))
    return files
