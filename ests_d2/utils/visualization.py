"""Drawing and serialising text-spotting predictions (used by tools/demo.py)."""
import json
from typing import Dict, List

import numpy as np
from detectron2.structures import Instances
from detectron2.utils.visualizer import Visualizer

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


def draw_text_instances(image_rgb: np.ndarray, instances: Instances) -> np.ndarray:
    """The image with each polygon outlined and its recognised text written above it (RGB, uint8)."""
    visualizer = Visualizer(image_rgb)
    font_size = max(10, int(0.02 * max(image_rgb.shape[:2])))
    for i in range(len(instances)):
        points = instances.polygons[i].reshape(-1, 2).cpu().numpy()
        color = (0.1, 0.9, 0.2)
        visualizer.draw_polygon(points, color=color, edge_color=color, alpha=0.25)
        x, y = points[:, 0].min(), points[:, 1].min()
        # Escape "$": matplotlib would read "$...$" in a recognised word as math text.
        label = f"{instances.texts[i]} ({float(instances.scores[i]):.2f})".replace("$", r"\$")
        visualizer.draw_text(label, (x, max(0.0, y - font_size)), font_size=font_size, color="yellow",
                             horizontal_alignment="left")
    return visualizer.get_output().get_image()
