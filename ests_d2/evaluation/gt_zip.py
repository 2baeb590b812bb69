"""Evaluation ground truth in the official zip format: one writer for prepared and derived GT.

One member per image, ``{image_id:07d}.txt`` at the zip root, UTF-8 with LF line endings, one line per
instance: ``x1,y1,...,xn,yn,####transcription``; ``###`` marks don't care. Two point styles:

- ``official_ring=True`` (prepared GT zips, e.g. ``datasets/prepare_*.py``): integer pixels, and the ring as the
  official zips store it, counter-clockwise on screen from the first annotated point. Annotations here run
  clockwise (top side left->right, then bottom side right->left), so the first point is kept and the rest
  reversed (ICDAR2015 ``p1,p2,p3,p4`` is written ``p1,p4,p3,p2``).
- ``official_ring=False`` (GT derived from dataset dicts when a dataset has no GT zip): float32 coordinates
  printed exactly, in the given order, so that the scores do not depend on a rounding the data never had.
"""
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np

from ests_d2.structures import CharVocabulary, bezier_to_polygon

from .rrc_format import DONT_CARE, format_line, member_name, write_zip

__all__ = ["DONT_CARE", "gt_files_from_dataset_dicts", "gt_line", "write_gt_zip"]


def _float_text(v: float) -> str:
    return repr(float(np.float32(v)))  # reads back as the same float32


def gt_line(polygon: Sequence[float], text: str, official_ring: bool = True) -> str:
    """One GT line from a clockwise flat x,y polygon (see the module docstring for the two styles)."""
    pts = np.asarray(polygon, dtype=np.float64).reshape(-1, 2)
    if official_ring:
        ints = np.rint(pts).astype(np.int64)
        return format_line(np.concatenate([ints[:1], ints[1:][::-1]]).tolist(), text)
    return format_line([(_float_text(x), _float_text(y)) for x, y in pts], text)


def write_gt_zip(path: str, gt_by_image: Dict[int, Iterable[Tuple[Sequence[float], str]]],
                 official_ring: bool = True) -> None:
    """Write ``{image_id: [(clockwise flat polygon, transcription or "###"), ...]}`` as an eval GT zip.

    Every image gets a member, even without instances: the official script scores every GT member.
    """
    write_zip(path, _gt_files(gt_by_image, official_ring))


def _gt_files(gt_by_image, official_ring: bool) -> Dict[str, List[str]]:
    return {member_name(image_id): [gt_line(poly, text, official_ring) for poly, text in instances]
            for image_id, instances in gt_by_image.items()}


def gt_files_from_dataset_dicts(dataset_dicts: Iterable[dict], voc_size: int = 97,
                                vocabulary: Optional[CharVocabulary] = None) -> Dict[str, List[str]]:
    """Official-format GT lines ``{member name: lines}`` derived from detectron2 dataset dicts (float style).

    Polygons come from ``polys`` (flat x, y list) or are sampled from the 16 ``beziers`` numbers
    (8 points per curve); the text is decoded from ``rec`` with ``vocabulary`` (default: the EN one, which must
    have ``voc_size`` classes); ``iscrowd`` = 1 marks ``###``.
    """
    vocab = vocabulary or CharVocabulary.from_config(voc_size)
    gt_by_image: Dict[int, List[Tuple[np.ndarray, str]]] = {}
    for d in dataset_dicts:
        instances = gt_by_image.setdefault(d["image_id"], [])
        for k, ann in enumerate(d.get("annotations", [])):
            where = f"{d.get('file_name', d['image_id'])} annotation {k}"
            if "polys" in ann:
                flat = np.asarray(ann["polys"], dtype=np.float64).reshape(-1)
            elif "beziers" in ann:
                flat = bezier_to_polygon(np.asarray(ann["beziers"], dtype=np.float64))
            else:
                raise ValueError(f"{where}: needs 'polys' or 'beziers' to derive the evaluation GT")
            if len(flat) % 2 or len(flat) < 6:
                raise ValueError(f"{where}: polygon needs an even number >= 6 of coordinates, got {len(flat)}")
            if ann.get("iscrowd", 0):
                text = DONT_CARE
            elif "rec" in ann:
                text = vocab.decode(ann["rec"])
            else:
                raise ValueError(f"{where}: needs 'rec' (or iscrowd=1) to derive the evaluation GT")
            instances.append((flat, text))
    return _gt_files(gt_by_image, official_ring=False)
