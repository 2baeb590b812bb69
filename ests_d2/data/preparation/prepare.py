"""The shared engine: native annotations -> fitted, encoded COCO-text records + evaluation GT + a summary.

``prepare_dataset`` reads every annotation file of a format (``readers.FORMATS``), pairs it with its image
(``pairing``), fits each polygon (``bezier_fit``), encodes the transcription with the vocabulary and gathers
the numbers of the summary. Writing the files is ``writers``' job.
"""
import glob
import os
from collections import Counter
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

import numpy as np
from PIL import Image

from ests_d2.structures import CharVocabulary, bezier_to_polygon

from .bezier_fit import FittedText, PolygonGeometryError, fit_text_polygon, signed_area
from .pairing import ImagePairer, assign_image_ids
from .readers import DONT_CARE, FORMATS, NativeFormatError, NativeImage

DEFAULT_BAD_FIT_RATIO = 0.25  # a fit is flagged when its error exceeds this fraction of the text height
_EXIF_ORIENTATION = 0x0112
_TRANSPOSING_ORIENTATIONS = (5, 6, 7, 8)  # EXIF rotations by 90 degrees: detectron2 swaps width and height


@dataclass
class PreparedDataset:
    """The COCO-text ``images`` / ``annotations``, the eval GT per image id and what the summary reports."""

    images: List[Dict] = field(default_factory=list)
    annotations: List[Dict] = field(default_factory=list)
    gt_by_image: Dict[int, List[Tuple[List[float], str]]] = field(default_factory=dict)
    fit_errors: List[float] = field(default_factory=list)
    quad_fit_errors: List[float] = field(default_factory=list)
    bad_fits: List[Tuple[float, str]] = field(default_factory=list)  # (error px, where)
    skipped: List[str] = field(default_factory=list)  # where + why, for degenerate polygons
    reoriented: int = 0  # rings whose direction is against their format's convention
    empty_texts: int = 0  # instances without a transcription, kept as don't care
    truncated: int = 0  # transcriptions longer than max_text_len
    oov: Counter = field(default_factory=Counter)  # characters outside the vocabulary -> count
    image_id_rule: str = ""
    unannotated_images: List[str] = field(default_factory=list)


def image_size(path: str) -> Tuple[int, int]:
    """(width, height) as detectron2 reads the image: EXIF 90-degree rotations swap them."""
    try:
        with Image.open(path) as img:
            width, height = img.size
            orientation = img.getexif().get(_EXIF_ORIENTATION, 1)
    except OSError as e:
        raise NativeFormatError(f"{path}: cannot read the image ({e})") from None
    return (height, width) if orientation in _TRANSPOSING_ORIENTATIONS else (width, height)


def annotation_files(fmt: str, annotations: str) -> List[str]:
    """The format's annotation files: ``annotations`` itself if it is a file, else its files with the suffix."""
    if os.path.isfile(annotations):
        return [annotations]
    if not os.path.isdir(annotations):
        raise NativeFormatError(f"{annotations}: annotation file or folder not found")
    files = sorted(glob.glob(os.path.join(annotations, "*" + FORMATS[fmt].suffix)))
    if not files:
        raise NativeFormatError(f"{annotations}: no '*{FORMATS[fmt].suffix}' annotation files for format '{fmt}'")
    return files


def _encode(text: str, vocab: CharVocabulary, max_text_len: int, result: PreparedDataset) -> List[int]:
    rec = vocab.encode(text, max_text_len)
    result.oov.update(c for c in text if vocab.encode(c, 1)[0] == vocab.unknown_id)
    result.truncated += len(text) > max_text_len
    return rec


def _annotation(fitted: FittedText, text: str, dont_care: bool, rec: List[int], ann_id: int, image_id: int) -> Dict:
    ring = fitted.ring
    x0, y0 = ring.min(axis=0)
    x1, y1 = ring.max(axis=0)
    polys = bezier_to_polygon(fitted.beziers)
    return {
        "id": ann_id, "image_id": image_id, "category_id": 1, "iscrowd": int(dont_care),
        "bbox": [float(x0), float(y0), float(x1 - x0), float(y1 - y0)],
        "area": abs(signed_area(ring)),
        "segmentation": [ring.reshape(-1).tolist()],
        "bezier_pts": np.round(fitted.beziers, 2).tolist(),
        "polys": np.round(polys, 2).tolist(),
        "rec": rec, "text": text,
        "n_top_pts": fitted.n_top, "n_bottom_pts": fitted.n_bottom,
        "fit_error": round(fitted.fit_error, 3),
    }


def prepare_dataset(fmt: str, annotations: str, images_dir: str, vocab: CharVocabulary, *,
                    max_text_len: int = 25, image_ids: str = "auto", pairs_file: str = "",
                    start: Optional[str] = None, split: Optional[str] = None,
                    bad_fit_ratio: float = DEFAULT_BAD_FIT_RATIO) -> PreparedDataset:
    """Read, pair, fit and encode a whole dataset (nothing is written).

    Args:
        fmt: a ``readers.FORMATS`` key. annotations: a file or a folder of them. images_dir: the image folder.
        vocab: encodes ``rec``. image_ids: ``auto`` | ``name`` | ``sequential`` (``pairing.assign_image_ids``).
        start, split: override the format's ring convention (``bezier_fit.fit_text_polygon``).
        bad_fit_ratio: flag fits whose error exceeds this fraction of the text height.
    Raises:
        NativeFormatError: a malformed file (named with its line), a missing image, clashing image ids.
    """
    spec = FORMATS[fmt]
    start, split = start or spec.start, split or spec.split
    pairer = ImagePairer(images_dir, pairs_file)
    records = _read_and_pair(fmt, annotations, pairer)
    result = PreparedDataset(image_id_rule=assign_image_ids(records, image_ids))
    ids = Counter(native.image_id for native, _ in records)
    clash = [i for i, n in ids.items() if n > 1]
    if clash:
        raise NativeFormatError(f"image id {clash[0]} is given to {ids[clash[0]]} images; fix the pairs / ids")
    used = {os.path.basename(path) for _, path in records}
    result.unannotated_images = [f for f in pairer.images if f not in used]
    for native, path in sorted(records, key=lambda r: r[0].image_id):
        _add_image(native, path, images_dir, vocab, max_text_len, start, split, bad_fit_ratio, result)
    return result


def _read_and_pair(fmt: str, annotations: str, pairer: ImagePairer) -> List[Tuple[NativeImage, str]]:
    records, seen = [], {}
    for ann_file in annotation_files(fmt, annotations):
        for native in FORMATS[fmt].read(ann_file):
            path = pairer.image_path(native)
            if path in seen:
                raise NativeFormatError(f"{native.annotation_file}: image '{path}' is already annotated by "
                                        f"{seen[path]}")
            seen[path] = native.annotation_file
            records.append((native, path))
    return records


def _add_image(native: NativeImage, path: str, images_dir: str, vocab: CharVocabulary, max_text_len: int,
               start: str, split: str, bad_fit_ratio: float, result: PreparedDataset) -> None:
    width, height = image_size(path)
    rel = os.path.relpath(path, os.path.abspath(images_dir))
    result.images.append({"id": native.image_id, "file_name": rel.replace(os.sep, "/"), "width": width,
                          "height": height, "annotation_file": os.path.basename(native.annotation_file)})
    gt = result.gt_by_image.setdefault(native.image_id, [])
    for inst in native.instances:
        try:
            fitted = fit_text_polygon(inst.points, start=start, split=split)
        except PolygonGeometryError as e:
            result.skipped.append(f"{inst.where}: {e}")
            continue
        result.reoriented += (signed_area(inst.points) < 0) != (start == "last")
        dont_care = inst.dont_care or not inst.text.strip()
        result.empty_texts += not inst.dont_care and not inst.text.strip()
        text = DONT_CARE if dont_care and not inst.text.strip() else inst.text
        rec = _encode(text, vocab, max_text_len, result) if not dont_care else vocab.encode(text, max_text_len)
        ann = _annotation(fitted, text, dont_care, rec, len(result.annotations) + 1, native.image_id)
        result.annotations.append(ann)
        gt.append((ann["segmentation"][0], DONT_CARE if dont_care else text))
        (result.quad_fit_errors if len(fitted.ring) == 4 else result.fit_errors).append(fitted.fit_error)
        if fitted.fit_error > bad_fit_ratio * fitted.text_height:
            result.bad_fits.append((fitted.fit_error, inst.where))
