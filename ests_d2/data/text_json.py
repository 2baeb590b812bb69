"""Load and validate COCO-text annotation jsons (AdelaiDet / DeepSolo / ESTextSpotter format).

The json holds COCO ``images`` and ``annotations``; each annotation carries ``bezier_pts`` (16 floats:
4 control points of the top curve left->right, then 4 of the bottom curve right->left), ``rec``
(recognition class ids), optionally ``polys`` (16 sampled boundary points), ``bbox`` (XYWH) and
``iscrowd``. The output is a list of detectron2 dataset dicts as described in docs/ARCHITECTURE.md.

Problems are split in two classes (the rules are listed for users in datasets/README.md):

- fatal (``TextAnnotationError``): a malformed file or labels that would silently train the wrong
  thing -- no ``images`` / ``annotations`` list, duplicate image ids, ``bezier_pts`` / ``bbox`` that are
  not lists of 16 / 4 numbers, ``rec`` that is not a list of integers or has ids outside the vocabulary,
  missing image files (and, with ``verify_images``, unreadable ones: ``image_io.ImageReadError``);
- tolerable (skipped, counted, summarised once in the log with the first example of each reason):
  annotations whose ``image_id`` is in no image, boxes with NaN / infinity, boxes empty after clamping
  to the image (the official loader drops them too), degenerate curves (all control points equal, or a
  boundary polygon of zero area), control points far from the box and the image (a corrupted label that
  would blow up the polygon loss) and training words without a transcription (``rec`` holding no
  character; such a word on a don't-care region is kept, its text is never used).
"""
import contextlib
import io
import json
import logging
import os
from collections import defaultdict
from typing import Dict, List, Optional

import numpy as np
from detectron2.structures import BoxMode

from ests_d2.structures import bezier_to_polygon, shoelace_area

from .image_io import verify_image_files

logger = logging.getLogger(__name__)

DEFAULT_MAX_TEXT_LEN = 25  # the official slot count; the mapper re-pads to MODEL.ESTS.MAX_TEXT_LEN
_MIN_POLYGON_AREA = 1e-6  # px^2; below this the sampled boundary encloses nothing
# Control points may lie beyond the box (and the image) by this many times its longer side. On real curved
# text they stand out of the box by a fraction of it (measured on the shared samples: at most 0.2 box sides on
# CTW1500, 0.1 on Total-Text, 0 on ICDAR2015); a point at 1e9 from a corrupted export is far beyond.
_CONTROL_POINT_MARGIN = 1.0
VERIFY_IMAGES_ENV = "ESTS_VERIFY_IMAGES"  # "1": every load runs the image pre-check (image_io.verify_image_files)


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


def _read_coco(json_file: str):
    """The json as an indexed pycocotools ``COCO``, after checking what the index would silently get wrong.

    pycocotools keeps the last of two images with the same id (the other image's words then belong to
    it) and treats a missing ``images`` / ``annotations`` list as empty; both are errors here.
    """
    from pycocotools.coco import COCO

    if not os.path.isfile(json_file):
        raise TextAnnotationError(f"{json_file}: annotation file not found")
    try:
        with open(json_file, encoding="utf-8") as f:
            dataset = json.load(f)
    except (ValueError, UnicodeDecodeError) as e:  # a truncated or non-json file: say which one and where
        raise TextAnnotationError(f"{json_file}: cannot be read as COCO json ({e})") from e
    if not isinstance(dataset, dict):
        raise TextAnnotationError(f"{json_file}: cannot be read as COCO json (the top level is a "
                                  f"{type(dataset).__name__}, expected an object with 'images' and 'annotations')")
    for key in ("images", "annotations"):
        if not isinstance(dataset.get(key), list):
            found = "missing" if key not in dataset else f"a {type(dataset[key]).__name__}"
            raise TextAnnotationError(f"{json_file}: has no '{key}' list ({found})")
    if not dataset["images"]:
        raise TextAnnotationError(f"{json_file}: the 'images' list is empty")
    first_of_id: Dict = {}
    for i, img in enumerate(dataset["images"]):
        if not isinstance(img, dict) or "id" not in img:
            raise TextAnnotationError(f"{json_file}: images[{i}] has no 'id'")
        if img["id"] in first_of_id:
            raise TextAnnotationError(f"{json_file}: image id {img['id']} is used twice ('{first_of_id[img['id']]}' "
                                      f"and '{img.get('file_name')}'); image ids must be unique")
        first_of_id[img["id"]] = img.get("file_name")
    for i, ann in enumerate(dataset["annotations"]):
        if not isinstance(ann, dict) or "image_id" not in ann:
            raise TextAnnotationError(f"{json_file}: annotations[{i}] (id {_get(ann, 'id')}) has no 'image_id'")
    coco = COCO()
    coco.dataset = dataset
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress on stdout
        coco.createIndex()
    return coco


def _get(node, key):
    return node.get(key) if isinstance(node, dict) else None


def _verify_requested(verify_images: Optional[bool]) -> bool:
    if verify_images is not None:
        return verify_images
    return os.environ.get(VERIFY_IMAGES_ENV, "").strip().lower() not in ("", "0", "false", "no")


def load_text_json(
    json_file: str,
    image_root: str,
    dataset_name: Optional[str] = None,
    *,
    voc_size: int = 97,
    pad_id: Optional[int] = None,
    max_text_len: int = DEFAULT_MAX_TEXT_LEN,
    check_images: bool = True,
    verify_images: Optional[bool] = None,
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
        verify_images: also pre-check every image (header decode and end marker, see
            ``image_io.image_file_problem``; about 0.06 ms per cached image) and raise naming the bad ones. None:
            only when the environment variable ``ESTS_VERIFY_IMAGES`` is set to 1.
    Returns:
        list of dicts with ``file_name``, ``image_id``, ``height``, ``width`` and ``annotations``; each
        annotation has ``bbox`` (XYXY_ABS, clamped to the image), ``bbox_mode``, ``category_id`` 0,
        ``beziers`` (16 floats), ``rec`` (``max_text_len`` ints), ``iscrowd`` and, when the json has
        them, ``polys`` (32 floats).
    """
    coco = _read_coco(json_file)
    pad_id = voc_size - 1 if pad_id is None else int(pad_id)
    skipped: Dict[str, List[str]] = defaultdict(list)  # reason -> where each skipped annotation was
    cut: List[str] = []  # where each annotation kept with a truncated ``rec`` was
    for ann in coco.dataset["annotations"]:
        if ann["image_id"] not in coco.imgs:  # pycocotools indexes them under no image: count them
            skipped["an image_id that is in no image"].append(
                f"{json_file}: annotation id {ann.get('id')} (image_id {ann['image_id']})")
    dataset_dicts = []
    for img_id in sorted(coco.imgs):
        record = _image_record(json_file, image_root, coco.imgs[img_id])
        converted = (_convert_annotation(json_file, coco.imgs[img_id], ann, voc_size, max_text_len, pad_id, skipped,
                                         cut) for ann in coco.imgToAnns.get(img_id, []))
        record["annotations"] = [obj for obj in converted if obj is not None]
        dataset_dicts.append(record)

    source = f"{json_file} (dataset '{dataset_name}')" if dataset_name else json_file
    if check_images:
        _check_image_files(json_file, dataset_dicts)
    if _verify_requested(verify_images):
        verify_image_files(source, dataset_dicts)
    if cut:  # kept, but the transcription lost characters: say so once, with the first example
        logger.warning(f"{dataset_name or json_file}: {len(cut)} transcriptions longer than {max_text_len} "
                       f"characters were cut to {max_text_len} like the official loader (first: {cut[0]})")
    if skipped:
        logger.warning(summarize_skipped(dataset_name or json_file, skipped))
    num_instances = sum(len(d["annotations"]) for d in dataset_dicts)
    logger.info(f"Loaded {len(dataset_dicts)} images, {num_instances} text instances from {json_file}")
    return dataset_dicts


def _image_record(json_file: str, image_root: str, img: Dict) -> Dict:
    """The dataset dict of one ``images[]`` entry, without its annotations."""
    for key in ("file_name", "height", "width"):
        if key not in img:
            raise TextAnnotationError(f"{_where(json_file, img)}: missing field '{key}'")
    return {"file_name": os.path.join(image_root, img["file_name"]), "image_id": img["id"],
            "height": int(img["height"]), "width": int(img["width"])}


def _numbers(where: str, ann: Dict, key: str, expected: int) -> np.ndarray:
    """``ann[key]`` as ``expected`` float64 values; an error naming the field when it is anything else."""
    values = ann[key]
    try:
        if isinstance(values, (str, bytes, dict)):
            raise TypeError(type(values).__name__)
        array = np.asarray(values, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError) as e:
        raise TextAnnotationError(f"{where}: {key} must be a list of {expected} numbers ({e})") from e
    if array.size != expected:
        raise TextAnnotationError(f"{where}: {key} has {array.size} values, expected {expected}")
    return array


def _rec_ids(where: str, rec, voc_size: int) -> List[int]:
    """``rec`` as class ids; an error for a string, non-integers (40.7 is not 40) or ids out of the vocabulary."""
    if not isinstance(rec, (list, tuple)):
        raise TextAnnotationError(f"{where}: rec must be a list of integer class ids, got a {type(rec).__name__} "
                                  f"({rec!r:.40})")
    for i, r in enumerate(rec):
        if not isinstance(r, (int, np.integer)) or isinstance(r, bool):
            raise TextAnnotationError(f"{where}: rec[{i}] is {r!r} ({type(r).__name__}); rec must be a list of "
                                      f"integer class ids")
    bad = [r for r in rec if not 0 <= r < voc_size]
    if bad:
        raise TextAnnotationError(
            f"{where}: rec ids {sorted(set(bad))[:5]} are outside the vocabulary [0, {voc_size}) "
            f"(is MODEL.ESTS.VOC_SIZE / the dataset's voc_size right?)"
        )
    return [int(r) for r in rec]


def _far_control_points(control_points: np.ndarray, box: np.ndarray, width: int, height: int) -> bool:
    """Whether a control point lies more than ``_CONTROL_POINT_MARGIN`` sides beyond the box or the image."""
    for low, high in ((box[:2], box[2:]), (np.zeros(2), np.array([width, height], dtype=np.float64))):
        margin = _CONTROL_POINT_MARGIN * float((high - low).max())
        if (control_points < low - margin).any() or (control_points > high + margin).any():
            return True
    return False


def _convert_annotation(json_file, img, ann, voc_size, max_text_len, pad_id, skipped, cut) -> Optional[Dict]:
    """One json annotation -> one dataset-dict annotation, or None (tolerable problem, counted)."""
    where = _where(json_file, img, ann)
    for key in ("bezier_pts", "rec"):
        if key not in ann:
            raise TextAnnotationError(f"{where}: missing field '{key}'")
    beziers = _numbers(where, ann, "bezier_pts", 16)
    if not np.isfinite(beziers).all():
        raise TextAnnotationError(f"{where}: bezier_pts contains NaN or infinity")
    rec = _rec_ids(where, ann["rec"], voc_size)
    polys = ann.get("polys")
    if polys is not None and len(polys) != 32:
        raise TextAnnotationError(f"{where}: polys has {len(polys)} values, expected 32")
    box = _numbers(where, ann, "bbox", 4) if "bbox" in ann else None
    iscrowd = int(ann.get("iscrowd", 0))

    # Zero enclosed area covers all-equal control points and curves collapsed onto a line.
    sampled = bezier_to_polygon(beziers).reshape(-1, 2)  # the 16-point polygon target
    reason = None
    if shoelace_area(sampled) < _MIN_POLYGON_AREA:
        reason = "degenerate curves (zero-area boundary)"
    elif box is not None and not np.isfinite(box).all():
        reason = "a bbox holding NaN or infinity"
    else:
        reason, box = _box_problem(beziers, sampled, box, int(img["width"]), int(img["height"]))
    if reason is None and not iscrowd and all(r == pad_id for r in rec):
        reason = "no transcription (rec empty or only padding) on a word that is not don't-care"
    if reason is not None:
        skipped[reason].append(where)
        return None

    if any(r != pad_id for r in rec[max_text_len:]):
        cut.append(where)
    obj = {
        "bbox": box.tolist(),
        "bbox_mode": BoxMode.XYXY_ABS,
        "category_id": 0,
        "beziers": beziers.tolist(),
        "rec": _fit_rec(rec, max_text_len, pad_id),
        "iscrowd": iscrowd,
    }
    if polys is not None:
        obj["polys"] = [float(v) for v in polys]
    return obj


def _box_problem(beziers, sampled, xywh, width: int, height: int):
    """(skip reason or None, XYXY box clamped to the image) of an annotation with a finite ``bbox`` (or none)."""
    if xywh is not None:
        x, y, w, h = xywh
        box = np.array([x, y, x + w, y + h])
    else:  # official jsons always have bbox; for others use the tight box of the sampled boundary
        box = np.concatenate([sampled.min(axis=0), sampled.max(axis=0)])
    clamped = box.clip([0, 0, 0, 0], [width, height, width, height])  # official: clamp, keep x1>x0, y1>y0
    if not (clamped[2] > clamped[0] and clamped[3] > clamped[1]):
        return "non-positive boxes (after clamping to the image)", clamped
    if _far_control_points(beziers.reshape(8, 2), box, width, height):
        return f"control points more than {_CONTROL_POINT_MARGIN:g} side beyond the box or the image", clamped
    return None, clamped
