"""Load and validate COCO-text annotation jsons (AdelaiDet / DeepSolo / ESTextSpotter format).

The json holds COCO ``images`` and ``annotations``; each annotation carries ``bezier_pts`` (16 floats:
4 control points of the top curve left->right, then 4 of the bottom curve right->left), ``rec``
(recognition class ids), optionally ``polys`` (16 sampled boundary points), ``bbox`` (XYWH) and
``iscrowd``. The output is a list of detectron2 dataset dicts as described in docs/ARCHITECTURE.md.

Problems are split in two classes:

- fatal (``TextAnnotationError``): a malformed file or labels that would silently train the wrong
  thing -- ``bezier_pts`` of the wrong length, ``rec`` ids outside the vocabulary, missing image files;
- tolerable (skipped, counted, summarised once in the log): annotations whose box is empty after
  clamping to the image (the official loader drops them too) and degenerate curves (all control
  points equal, or a boundary polygon of zero area).
"""
import contextlib
import io
import logging
import os
from collections import defaultdict
from typing import Dict, List, Optional

import numpy as np
from detectron2.structures import BoxMode

from ests_d2.structures import bezier_to_polygon, shoelace_area

logger = logging.getLogger(__name__)

DEFAULT_MAX_TEXT_LEN = 25  # the official slot count; the mapper re-pads to MODEL.ESTS.MAX_TEXT_LEN
_MIN_POLYGON_AREA = 1e-6  # px^2; below this the sampled boundary encloses nothing


class TextAnnotationError(ValueError):
    """A fatal problem in a text annotation json; the message names the file, image and annotation."""


def _where(json_file: str, img: Dict, ann: Optional[Dict] = None) -> str:
    where = f"{json_file}: image '{img.get('file_name')}' (id {img.get('id')})"
    if ann is not None:
        where += f", annotation id {ann.get('id')}"
    return where


def _fit_rec(rec: List[int], max_text_len: int, pad_id: int) -> List[int]:
    """Truncate to the first ``max_text_len`` ids (official ``[:, :25]``) and pad with ``pad_id``."""
    rec = [int(r) for r in rec[:max_text_len]]
    return rec + [pad_id] * (max_text_len - len(rec))


def _check_image_files(json_file: str, dataset_dicts: List[Dict]) -> None:
    missing = [d["file_name"] for d in dataset_dicts if not os.path.isfile(d["file_name"])]
    if missing:
        shown = ", ".join(f"'{m}'" for m in missing[:5])
        more = f" (and {len(missing) - 5} more)" if len(missing) > 5 else ""
        raise TextAnnotationError(
            f"{json_file}: {len(missing)} of {len(dataset_dicts)} image files are missing: {shown}{more}"
        )


def summarize_skipped(source: str, skipped: Dict[str, List[str]]) -> str:
    """One log line: how many annotations were skipped for each reason, with the first example."""
    total = sum(len(v) for v in skipped.values())
    reasons = "; ".join(f"{len(v)} with {why} (first: {v[0]})" for why, v in sorted(skipped.items()))
    return f"{source}: skipped {total} annotations: {reasons}"


def load_text_json(
    json_file: str,
    image_root: str,
    dataset_name: Optional[str] = None,
    *,
    voc_size: int = 97,
    pad_id: Optional[int] = None,
    max_text_len: int = DEFAULT_MAX_TEXT_LEN,
    check_images: bool = True,
) -> List[Dict]:
    """Read a COCO-text json into detectron2 dataset dicts, validating every annotation.

    Args:
        json_file: path of the json.
        image_root: folder that ``images[].file_name`` is relative to.
        dataset_name: only used in log messages.
        voc_size: recognition classes V; ``rec`` ids must lie in [0, V).
        pad_id: the padding id (default V - 1; the official VinText vocabulary pads with 105 of 107).
        max_text_len: length of the returned ``rec`` lists.
        check_images: raise if an image file is missing (one ``isfile`` per image).
    Returns:
        list of dicts with ``file_name``, ``image_id``, ``height``, ``width`` and ``annotations``; each
        annotation has ``bbox`` (XYXY_ABS, clamped to the image), ``bbox_mode``, ``category_id`` 0,
        ``beziers`` (16 floats), ``rec`` (``max_text_len`` ints), ``iscrowd`` and, when the json has
        them, ``polys`` (32 floats).
    """
    from pycocotools.coco import COCO

    if not os.path.isfile(json_file):
        raise TextAnnotationError(f"{json_file}: annotation file not found")
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress on stdout
        try:
            coco = COCO(json_file)
        except Exception as e:  # a truncated or non-json file: say which one
            raise TextAnnotationError(f"{json_file}: cannot be read as COCO json ({e})") from e

    pad_id = voc_size - 1 if pad_id is None else int(pad_id)
    skipped: Dict[str, List[str]] = defaultdict(list)  # reason -> where each skipped annotation was
    cut: List[str] = []  # where each annotation kept with a truncated ``rec`` was
    dataset_dicts = []
    for img_id in sorted(coco.imgs):
        img = coco.imgs[img_id]
        for key in ("file_name", "height", "width"):
            if key not in img:
                raise TextAnnotationError(f"{_where(json_file, img)}: missing field '{key}'")
        height, width = int(img["height"]), int(img["width"])
        record = {
            "file_name": os.path.join(image_root, img["file_name"]),
            "image_id": img_id,
            "height": height,
            "width": width,
        }
        annotations = []
        for ann in coco.imgToAnns.get(img_id, []):
            obj = _convert_annotation(json_file, img, ann, voc_size, max_text_len, pad_id, skipped, cut)
            if obj is not None:
                annotations.append(obj)
        record["annotations"] = annotations
        dataset_dicts.append(record)

    if check_images:
        _check_image_files(json_file, dataset_dicts)
    if cut:  # kept, but the transcription lost characters: say so once, with the first example
        logger.warning(f"{dataset_name or json_file}: {len(cut)} transcriptions longer than {max_text_len} "
                       f"characters were cut to {max_text_len} like the official loader (first: {cut[0]})")
    if skipped:
        logger.warning(summarize_skipped(dataset_name or json_file, skipped))
    num_instances = sum(len(d["annotations"]) for d in dataset_dicts)
    logger.info(f"Loaded {len(dataset_dicts)} images, {num_instances} text instances from {json_file}")
    return dataset_dicts


def _convert_annotation(json_file, img, ann, voc_size, max_text_len, pad_id, skipped, cut) -> Optional[Dict]:
    """One json annotation -> one dataset-dict annotation, or None (tolerable problem, counted)."""
    where = _where(json_file, img, ann)
    for key in ("bezier_pts", "rec"):
        if key not in ann:
            raise TextAnnotationError(f"{where}: missing field '{key}'")
    beziers = np.asarray(ann["bezier_pts"], dtype=np.float64).reshape(-1)
    if beziers.size != 16:
        raise TextAnnotationError(f"{where}: bezier_pts has {beziers.size} values, expected 16")
    if not np.isfinite(beziers).all():
        raise TextAnnotationError(f"{where}: bezier_pts contains NaN or infinity")
    rec = [int(r) for r in ann["rec"]]
    bad = [r for r in rec if not 0 <= r < voc_size]
    if bad:
        raise TextAnnotationError(
            f"{where}: rec ids {sorted(set(bad))[:5]} are outside the vocabulary [0, {voc_size}) "
            f"(is MODEL.ESTS.VOC_SIZE / the dataset's voc_size right?)"
        )
    polys = ann.get("polys")
    if polys is not None and len(polys) != 32:
        raise TextAnnotationError(f"{where}: polys has {len(polys)} values, expected 32")

    # Zero enclosed area covers all-equal control points and curves collapsed onto a line.
    sampled = bezier_to_polygon(beziers).reshape(-1, 2)  # the 16-point polygon target
    if shoelace_area(sampled) < _MIN_POLYGON_AREA:
        skipped["degenerate curves (zero-area boundary)"].append(where)
        return None

    height, width = int(img["height"]), int(img["width"])
    if "bbox" in ann:
        x, y, w, h = (float(v) for v in ann["bbox"])
        box = np.array([x, y, x + w, y + h])
    else:  # official jsons always have bbox; for others use the tight box of the sampled boundary
        box = np.concatenate([sampled.min(axis=0), sampled.max(axis=0)])
    box = box.clip([0, 0, 0, 0], [width, height, width, height])  # official: clamp, then keep x1>x0, y1>y0
    if not (box[2] > box[0] and box[3] > box[1]):
        skipped["non-positive boxes (after clamping to the image)"].append(where)
        return None

    if any(r != pad_id for r in rec[max_text_len:]):
        cut.append(where)
    obj = {
        "bbox": box.tolist(),
        "bbox_mode": BoxMode.XYXY_ABS,
        "category_id": 0,
        "beziers": beziers.tolist(),
        "rec": _fit_rec(rec, max_text_len, pad_id),
        "iscrowd": int(ann.get("iscrowd", 0)),
    }
    if polys is not None:
        obj["polys"] = [float(v) for v in polys]
    return obj


