"""Drawing and serialising text-spotting predictions (used by tools/demo.py).

Text is written with PIL ``ImageFont`` and a TrueType font: by default matplotlib's DejaVu Sans (it ships with
a dependency and covers Latin incl. Vietnamese, Greek and Cyrillic); CJK and other scripts need a font that has
their glyphs (``tools/demo.py --font PATH``). Characters the font lacks are reported and drawn as '?'.
"""
import functools
import json
import logging
import os
from typing import Dict, List, Optional, Sequence, Tuple

import matplotlib
import numpy as np
from detectron2.structures import Instances
from detectron2.utils.visualizer import Visualizer
from PIL import Image, ImageDraw, ImageFont

from ests_d2.structures import UNKNOWN_GLYPH

logger = logging.getLogger(__name__)

# Instances fields produced by the ESTS meta-arch (docs/ARCHITECTURE.md).
REQUIRED_FIELDS = ("scores", "polygons", "texts", "rec_scores")


def select_confident(instances: Instances, threshold: float) -> Instances:
    """Keep the instances whose detection score is at least ``threshold``."""
    missing = [f for f in REQUIRED_FIELDS if not instances.has(f)]
    if missing:
        raise ValueError(f"predictions lack the fields {missing}; expected the ESTS output contract")
    return instances[instances.scores >= threshold]  # ``texts`` is a TextList: it follows the mask too


def instances_to_records(instances: Instances) -> List[Dict]:
    """Plain JSON-serialisable records: polygon (16 [x, y] points), text, score, per-character confidences."""
    records = []
    for i in range(len(instances)):
        records.append(
            {
                # 0.01 px and 1e-4 are far below what the model resolves; rounding keeps the files readable
                "polygon": [[round(x, 2), round(y, 2)] for x, y in instances.polygons[i].reshape(-1, 2).tolist()],
                "text": instances.texts[i],
                "score": round(float(instances.scores[i]), 4),
                "char_scores": [round(c, 4) for c in instances.rec_scores[i].tolist()],
            }
        )
    return records


def write_prediction_json(record: Dict, path: str) -> None:
    """``record`` as JSON with one line per instance (readable and diffable, unlike one number per line)."""
    instances = record.get("instances", [])
    header = {k: v for k, v in record.items() if k != "instances"}
    lines = [json.dumps(header, ensure_ascii=False)[:-1] + ', "instances": [']
    lines += ["  " + json.dumps(inst, ensure_ascii=False) + ("," if i + 1 < len(instances) else "")
              for i, inst in enumerate(instances)]
    lines.append("]}")
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")


def default_font_path() -> str:
    """DejaVu Sans as shipped with matplotlib: Latin (Vietnamese included), Greek, Cyrillic -- not CJK."""
    return os.path.join(matplotlib.get_data_path(), "fonts", "ttf", "DejaVuSans.ttf")


def missing_glyphs(font_path: str, text: str) -> List[str]:
    """The distinct characters of ``text`` (blanks aside) that the TrueType font at ``font_path`` cannot draw."""
    font = _ft2font(font_path)
    return sorted({c for c in text if not c.isspace() and font.get_char_index(ord(c)) == 0})


@functools.lru_cache(maxsize=4)
def _ft2font(font_path: str):
    from matplotlib.ft2font import FT2Font

    if not os.path.isfile(font_path):
        raise FileNotFoundError(f"font file not found: {font_path}")
    return FT2Font(font_path)


class TextPainter:
    """Writes labels with a TrueType font (PIL ``ImageFont``); characters the font lacks are drawn as '?' and
    reported once each, instead of the empty boxes a font prints for glyphs it does not have."""

    def __init__(self, font_path: Optional[str] = None):
        self.font_path = font_path or default_font_path()
        _ft2font(self.font_path)  # fail early, naming the file, if it is missing or not a font
        self.reported: set = set()

    def drawable(self, text: str) -> str:
        """``text`` with the characters the font lacks replaced by '?' (each reported once, '口' silently)."""
        missing = missing_glyphs(self.font_path, text)
        new = [c for c in missing if c != UNKNOWN_GLYPH and c not in self.reported]
        if new:
            self.reported.update(new)
            codes = ", ".join(f"{c!r} U+{ord(c):04X}" for c in new[:10])
            logger.warning("font %s has no glyph for %s: drawn as '?'; pass --font PATH to a font that covers "
                           "the script (e.g. Noto Sans CJK for Chinese)", os.path.basename(self.font_path), codes)
        return "".join("?" if c in missing else c for c in text)

    def draw(self, image_rgb: np.ndarray, labels: Sequence[Tuple[float, float, str]], size: int) -> np.ndarray:
        """``image_rgb`` with each ``(x, y, text)`` written at its top-left corner on a dark backing box."""
        picture = Image.fromarray(image_rgb)
        draw = ImageDraw.Draw(picture)
        font = ImageFont.truetype(self.font_path, size)
        for x, y, text in labels:
            text = self.drawable(text)
            box = draw.textbbox((x, y), text, font=font)
            draw.rectangle(box, fill=(0, 0, 0))
            draw.text((x, y), text, font=font, fill=(255, 230, 0))
        return np.asarray(picture)


def draw_text_instances(image_rgb: np.ndarray, instances: Instances,
                        painter: Optional[TextPainter] = None) -> np.ndarray:
    """The image with each polygon outlined and its recognised text written above it (RGB, uint8).

    ``painter`` writes the labels (default: DejaVu Sans); pass one per run so each missing glyph is reported once.
    """
    visualizer = Visualizer(image_rgb)
    font_size = max(10, int(0.02 * max(image_rgb.shape[:2])))
    labels = []
    for i in range(len(instances)):
        points = instances.polygons[i].reshape(-1, 2).cpu().numpy()
        color = (0.1, 0.9, 0.2)
        visualizer.draw_polygon(points, color=color, edge_color=color, alpha=0.25)
        x, y = points[:, 0].min(), points[:, 1].min()
        label = f"{instances.texts[i]} ({float(instances.scores[i]):.2f})"
        labels.append((float(x), float(max(0.0, y - font_size)), label))
    picture = visualizer.get_output().get_image()
    return (painter or TextPainter()).draw(picture, labels, font_size)
