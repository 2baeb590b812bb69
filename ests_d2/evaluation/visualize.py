"""One picture per image of how the official matching judged a spotter (PIL only: no torch, no detectron2).

Colours: matched (right text) green, misread (IoU match, wrong text) orange, missed GT red, false
detection blue, don't care (GT or detection) grey. GT polygons are drawn thin, predictions thick; each
prediction carries its text, a misread one also the GT text, a missed GT its own text.
"""
import functools
import importlib.util
import logging
import os
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from .pipeline import RunResult
from .rrc_format import TextLine, member_name

logger = logging.getLogger(__name__)

COLOURS = {
    "matched": (40, 200, 40),
    "misread": (255, 150, 0),
    "missed": (230, 30, 30),
    "false": (40, 110, 255),
    "dont_care": (150, 150, 150),
}
DEFAULT_IMAGE_PATTERNS = ("img_{image_id}", "img{image_id}", "{image_id}", "{image_id:07d}", "gt_img_{image_id}")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".JPG", ".PNG")
_MARGIN = 20  # px around the polygons on a blank canvas


@functools.lru_cache(maxsize=8)
def _font(size: int):
    """DejaVu Sans from matplotlib's data folder (found without importing matplotlib), else PIL's default."""
    spec = importlib.util.find_spec("matplotlib")
    if spec and spec.submodule_search_locations:
        path = os.path.join(spec.submodule_search_locations[0], "mpl-data", "fonts", "ttf", "DejaVuSans.ttf")
        if os.path.isfile(path):
            return ImageFont.truetype(path, size)
    return ImageFont.load_default()


def find_image(image_dir: Optional[str], image_id: int, patterns: Sequence[str]) -> Optional[str]:
    """The first existing ``image_dir/pattern`` (``{image_id}`` formatted; extension optional), or None."""
    if not image_dir:
        return None
    for pattern in patterns:
        name = pattern.format(image_id=image_id)
        candidates = [name] if os.path.splitext(name)[1] else [name + ext for ext in IMAGE_EXTENSIONS]
        for candidate in candidates:
            path = os.path.join(image_dir, candidate)
            if os.path.isfile(path):
                return path
    return None


def _categories(result: RunResult, key: str) -> Tuple[List[str], List[str]]:
    """Category of each GT line and each detection of one image (see the module docstring)."""
    m = result.scored.images[key]
    n_det = len(result.predictions.get(key, []))
    if result.settings.task == "e2e":
        gt_dc, det_dc = m.gt_dont_care_e2e, m.det_dont_care_e2e
        pairs = m.e2e_pairs
    else:
        gt_dc, det_dc = m.gt_dont_care_det, m.det_dont_care_det
        pairs = [(g, d, True) for g, d in m.det_pairs]
    gt_cat = ["dont_care" if dc else "missed" for dc in gt_dc]
    det_cat = ["dont_care" if dc else "false" for dc in det_dc[:n_det]]
    for g, d, ok in pairs:
        gt_cat[g] = det_cat[d] = "matched" if ok else "misread"
    return gt_cat, det_cat


def _canvas(image_path: Optional[str], lines: List[TextLine]) -> Image.Image:
    if image_path:
        return Image.open(image_path).convert("RGB")
    pts = np.concatenate([l.points for l in lines]) if lines else np.zeros((1, 2))
    w, h = (np.maximum(pts.max(axis=0), 0) + _MARGIN).astype(int)
    return Image.new("RGB", (max(int(w), 64), max(int(h), 64)), (255, 255, 255))


def _label(draw, font, xy, text: str, colour) -> None:
    x, y = xy
    box = draw.textbbox((x, y), text, font=font, anchor="lb")
    draw.rectangle(box, fill=(0, 0, 0))
    draw.text((x, y), text, font=font, fill=colour, anchor="lb")


def draw_image(result: RunResult, gt: Dict[str, List[TextLine]], key: str, image_path: Optional[str]) -> Image.Image:
    """The picture of one GT sample (``key``) under ``result``'s run."""
    gt_lines, dets = gt[key], result.predictions.get(key, [])
    canvas = _canvas(image_path, gt_lines + dets)
    draw = ImageDraw.Draw(canvas)
    font = _font(max(11, min(canvas.size) // 45))
    gt_cat, det_cat = _categories(result, key)
    gt_texts = result.scored.images[key].gt_texts
    for line, cat in zip(gt_lines, gt_cat):
        draw.polygon([tuple(p) for p in line.points.tolist()], outline=COLOURS[cat], width=1)
        if cat == "missed":
            _label(draw, font, tuple(line.points.min(axis=0)), f"GT {line.text}", COLOURS[cat])
    for d, (line, cat) in enumerate(zip(dets, det_cat)):
        draw.polygon([tuple(p) for p in line.points.tolist()], outline=COLOURS[cat], width=3)
        text = line.text
        if cat == "misread":
            g = next(g for g, dd, _ in result.scored.images[key].e2e_pairs if dd == d)
            text = f"{line.text} (GT {gt_texts[g]})"
        _label(draw, font, tuple(line.points.min(axis=0)), text, COLOURS[cat])
    _legend(draw, font, canvas.size[1])
    return canvas


def _legend(draw, font, height: int) -> None:
    """Colour key along the bottom edge (text is rarer there than at the top)."""
    x, y = 4, height - 4
    for name, colour in COLOURS.items():
        text = name.replace("_", " ")
        box = draw.textbbox((x, y), text, font=font, anchor="lb")
        draw.rectangle((box[0] - 2, box[1] - 2, box[2] + 2, box[3] + 2), fill=(0, 0, 0))
        draw.text((x, y), text, font=font, fill=colour, anchor="lb")
        x = box[2] + 8


def write_pictures(result: RunResult, gt: Dict[str, List[TextLine]], out_dir: str, image_dir: Optional[str] = None,
                   patterns: Sequence[str] = DEFAULT_IMAGE_PATTERNS, progress=None) -> int:
    """``out_dir/{image_id:07d}.png`` for every GT sample; returns how many were drawn on a blank canvas."""
    os.makedirs(out_dir, exist_ok=True)
    blank = 0
    keys = list(result.scored.images)
    for key in progress(keys) if progress else keys:
        image_path = find_image(image_dir, int(key), patterns)
        blank += image_path is None
        picture = draw_image(result, gt, key, image_path)
        # light compression: a 1280x720 picture takes a third of the time of the default level, ~1.3x the bytes
        picture.save(os.path.join(out_dir, os.path.splitext(member_name(int(key)))[0] + ".png"), compress_level=1)
    if blank and image_dir:
        logger.warning("%d of %d images not found in %s (patterns %s): drawn on a blank canvas",
                       blank, len(keys), image_dir, list(patterns))
    return blank
