"""Predictions in the neutral ``ests-eval-predictions/v1`` form (docs/EVALUATION.md), before thresholds.

One record per instance, in the model's order: polygon, float32 score, decoded text, the float32 mean
of the 25 per-slot recognition scores (``rec_conf``) and, where a weighted lexicon may need them, the
first ``len(text)`` rows of ``rec_prob``.
"""
import json
import os
from dataclasses import dataclass, field
from typing import List, Optional

import numpy as np

from ests_d2.structures import CharVocabulary

FORMAT = "ests-eval-predictions/v1"
SCORE_FLOOR = 0.1  # the official conversion keeps only score > 0.1, whatever the threshold


@dataclass
class InstancePrediction:
    polygon: np.ndarray  # (k, 2) float32 image pixels
    score: float  # float64 value of the float32 model score
    text: str  # official decoding, no lexicon
    rec_conf: Optional[float] = None  # float32 mean of the 25 rec_scores (padding included)
    rec_prob: Optional[np.ndarray] = None  # (K, V) float32 softmax rows, K >= len(text)


@dataclass
class ImagePrediction:
    image_id: int
    instances: List[InstancePrediction] = field(default_factory=list)


def from_instances(image_id: int, instances, keep_rec_prob: bool) -> ImagePrediction:
    """Neutral record of one image from model ``Instances`` (fields of docs/ARCHITECTURE.md).

    Args:
        keep_rec_prob: keep ``rec_prob`` rows (only for instances above the official 0.1 floor).
    """
    n = len(instances)
    if n == 0:
        return ImagePrediction(int(image_id), [])
    for name in ("scores", "polygons", "texts", "rec_scores") + (("rec_probs",) if keep_rec_prob else ()):
        if not instances.has(name):
            raise ValueError(f"image {image_id}: model output Instances lack the field {name!r} (docs/ARCHITECTURE.md)")
    scores = instances.scores.detach().float().cpu().numpy()
    polygons = instances.polygons.detach().float().cpu().numpy().reshape(n, -1, 2)
    rec_conf = instances.rec_scores.detach().float().cpu().mean(dim=1).numpy()
    texts = list(instances.texts)
    if len(texts) != n:
        raise ValueError(f"image {image_id}: {len(texts)} texts for {n} instances")
    probs = instances.rec_probs.detach().float().cpu().numpy() if keep_rec_prob else None
    out = []
    for k in range(n):
        keep_probs = probs is not None and scores[k] > SCORE_FLOOR
        out.append(
            InstancePrediction(
                polygon=polygons[k],
                score=float(scores[k]),
                text=texts[k],
                rec_conf=float(rec_conf[k]),
                rec_prob=probs[k, : len(texts[k])].copy() if keep_probs else None,
            )
        )
    return ImagePrediction(int(image_id), out)


def _instance_from_json(record, where: str, vocab: CharVocabulary) -> InstancePrediction:
    if not isinstance(record, dict):
        raise ValueError(f"{where}: an instance must be an object, got {type(record).__name__}")
    try:
        polygon = np.asarray(record["polygon"], dtype=np.float32).reshape(-1, 2)
        score = float(np.float32(record["score"]))
    except (KeyError, ValueError, TypeError) as e:
        raise ValueError(f"{where}: needs 'polygon' ([[x, y], ...]) and 'score' (number) ({e})") from None
    if "text" in record:
        text = str(record["text"])
    elif "rec" in record:
        try:
            text = vocab.decode([int(c) for c in record["rec"]])
        except (ValueError, TypeError, IndexError) as e:
            raise ValueError(f"{where}.rec: needs a list of class indices ({e})") from None
    else:
        raise ValueError(f"{where}: needs 'text' or 'rec'")
    try:
        if "rec_conf" in record:
            rec_conf = float(np.float32(record["rec_conf"]))
        elif "rec_scores" in record:
            rec_conf = float(np.asarray(record["rec_scores"], dtype=np.float32).mean(dtype=np.float32))
        else:
            rec_conf = None
        prob = record.get("rec_prob")
        rec_prob = None if prob is None else np.asarray(prob, np.float32).reshape(len(prob), -1)
    except (ValueError, TypeError) as e:
        raise ValueError(f"{where}: 'rec_conf' / 'rec_scores' / 'rec_prob' must be numbers ({e})") from None
    return InstancePrediction(polygon, score, text, rec_conf, rec_prob)


def _load_json(path: str):
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: invalid JSON at line {e.lineno} column {e.colno}: {e.msg}") from None
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}: not UTF-8 text (byte {e.start}: {e.reason})") from None


def _image_id(img, where: str) -> int:
    if not isinstance(img, dict) or "image_id" not in img:
        raise ValueError(f"{where}: needs an object with 'image_id'")
    image_id = img["image_id"]
    if isinstance(image_id, bool) or not isinstance(image_id, int):
        raise ValueError(f"{where}.image_id: must be an integer (the GT member number), got {image_id!r}")
    if image_id < 0:
        raise ValueError(f"{where}.image_id: must be >= 0, got {image_id}")
    return image_id


def read_json(path: str, vocab: CharVocabulary):
    """(dataset name or None, [ImagePrediction]) from a neutral JSON file; ``rec`` ids decode with ``vocab``.

    Raises:
        ValueError: one line naming the file and the position (JSON syntax) or the field (e.g.
            ``images[3].image_id``) that is wrong.
    """
    data = _load_json(path)
    if not isinstance(data, dict) or data.get("format") != FORMAT or not isinstance(data.get("images"), list):
        raise ValueError(f"{path}: not an {FORMAT} file (needs 'format': {FORMAT!r} and an 'images' list)")
    images, seen = [], set()
    for i, img in enumerate(data["images"]):
        image_id = _image_id(img, f"{path}: images[{i}]")
        if image_id in seen:
            raise ValueError(f"{path}: images[{i}].image_id: {image_id} is listed twice")
        seen.add(image_id)
        records = img.get("instances", [])
        if not isinstance(records, list):
            raise ValueError(f"{path}: images[{i}].instances: must be a list")
        instances = [
            _instance_from_json(r, f"{path}: images[{i}].instances[{k}] (image {image_id})", vocab)
            for k, r in enumerate(records)
        ]
        images.append(ImagePrediction(image_id, instances))
    return data.get("dataset"), images


def write_json(path: str, dataset: str, images: List[ImagePrediction]) -> None:
    """Neutral JSON; floats are the float64 values of the float32 numbers, so they read back exactly."""

    def inst(p: InstancePrediction) -> dict:
        rec = {"polygon": p.polygon.astype(np.float64).tolist(), "score": p.score, "text": p.text}
        if p.rec_conf is not None:
            rec["rec_conf"] = p.rec_conf
        if p.rec_prob is not None:
            rec["rec_prob"] = p.rec_prob.astype(np.float64).tolist()
        return rec

    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    payload = {
        "format": FORMAT,
        "dataset": dataset,
        "images": [{"image_id": im.image_id, "instances": [inst(p) for p in im.instances]} for im in images],
    }
    with open(path, "w", encoding="utf-8") as f:
        json.dump(payload, f)
