"""Which image each native annotation belongs to, and the image ids.

Per-image annotation files are paired with the images by name: the annotation stem without a ``poly_gt_`` /
``gt_`` prefix equals the image stem (``gt_img_10.txt`` -> ``img_10.jpg``), else the last number in both names
is equal and unique (``gt_1.txt`` -> ``im0001.jpg``, ``0001019.txt`` -> ``1019.jpg``). A pairs file
(CSV ``annotation,image[,image_id]``) overrides this for sets whose names do not match. Formats that name their
image (LabelMe, CTW1500 xml, CSV, JSONL) look it up in the image folder (then beside the annotation file).
"""
import csv
import os
import re
from typing import Dict, List, Optional, Tuple

from .readers import NativeFormatError, NativeImage

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".gif", ".webp")
_LAST_NUMBER = re.compile(r"(\d+)(?!.*\d)")


def last_number(name: str) -> Optional[int]:
    """The last group of digits in a file's stem (``img_10.jpg`` -> 10), or None."""
    m = _LAST_NUMBER.search(os.path.splitext(os.path.basename(name))[0])
    return None if m is None else int(m.group(1))


def list_images(images_dir: str) -> List[str]:
    if not os.path.isdir(images_dir):
        raise NativeFormatError(f"{images_dir}: image folder not found")
    return sorted(f for f in os.listdir(images_dir) if f.lower().endswith(IMAGE_EXTENSIONS))


def read_pairs(path: str) -> Dict[str, Tuple[str, Optional[int]]]:
    """``{annotation file name: (image file name, image id or None)}`` from ``annotation,image[,image_id]`` rows."""
    pairs = {}
    with open(path, encoding="utf-8-sig", newline="") as f:
        for k, row in enumerate(csv.reader(f), 1):
            if not row or row[0].strip().lower() == "annotation":
                continue  # blank line or header
            if len(row) < 2:
                raise NativeFormatError(f"{path}:{k}: expected annotation,image[,image_id], got {row!r}")
            try:
                image_id = int(row[2]) if len(row) > 2 and row[2].strip() else None
            except ValueError:
                raise NativeFormatError(f"{path}:{k}: image_id must be an integer, got {row[2]!r}") from None
            pairs[os.path.basename(row[0].strip())] = (row[1].strip(), image_id)
    return pairs


class ImagePairer:
    """Finds the image file of each ``NativeImage`` (see the module docstring)."""

    def __init__(self, images_dir: str, pairs_file: str = ""):
        self.images_dir = images_dir
        self.images = list_images(images_dir)
        self.pairs = read_pairs(pairs_file) if pairs_file else {}
        self._by_stem = {os.path.splitext(f)[0]: f for f in self.images}
        self._by_number: Dict[int, List[str]] = {}
        for f in self.images:
            if last_number(f) is not None:
                self._by_number.setdefault(last_number(f), []).append(f)

    def image_path(self, native: NativeImage) -> str:
        """Absolute path of the image of ``native``; sets ``native.image_id`` from a pairs file."""
        ann_name = os.path.basename(native.annotation_file)
        if ann_name in self.pairs and native.image is None:
            name, image_id = self.pairs[ann_name]
            if image_id is not None:
                native.image_id = image_id
            return self._existing(name, native.annotation_file)
        if native.image is not None:
            return self._existing(native.image, native.annotation_file)
        stem = os.path.splitext(ann_name)[0]
        for prefix in ("poly_gt_", "gt_", ""):
            if stem.startswith(prefix) and stem[len(prefix):] in self._by_stem:
                return os.path.join(self.images_dir, self._by_stem[stem[len(prefix):]])
        matches = self._by_number.get(last_number(ann_name), []) if last_number(ann_name) is not None else []
        if len(matches) == 1:
            return os.path.join(self.images_dir, matches[0])
        why = f"{len(matches)} images share its number" if matches else "no image name matches it"
        raise NativeFormatError(f"{native.annotation_file}: cannot find its image in {self.images_dir} ({why}); "
                                f"give a pairs file (--pairs, CSV annotation,image[,image_id])")

    def _existing(self, name: str, annotation_file: str) -> str:
        for candidate in (os.path.join(self.images_dir, name), os.path.join(self.images_dir, os.path.basename(name)),
                          os.path.join(os.path.dirname(annotation_file), name)):
            if os.path.isfile(candidate):
                return os.path.abspath(candidate)
        raise NativeFormatError(f"{annotation_file}: image '{name}' not found in {self.images_dir}")


def assign_image_ids(records: List[Tuple[NativeImage, str]], policy: str) -> str:
    """Set ``image_id`` on every record that has none; returns the rule used.

    ``name``: the annotation file's number when its stem is only digits (an eval-zip member, ``0000177.txt``),
    else the image name's last number (``img_10.jpg`` -> 10, the official ICDAR / CTW1500 numbering);
    ``sequential``: 1..N in image-name order; ``auto``: ``name`` when that gives every image a distinct id.
    Explicit ids (pairs file, CSV/JSONL ``image_id``) always win.
    """
    def from_name(native, path):
        stem = os.path.splitext(os.path.basename(native.annotation_file))[0]
        return int(stem) if stem.isdigit() and native.image is None else last_number(path)

    if policy not in ("auto", "name", "sequential"):
        raise ValueError(f"image-id policy must be auto, name or sequential, got '{policy}'")
    named = [native.image_id if native.image_id is not None else from_name(native, path) for native, path in records]
    usable = None not in named and len(set(named)) == len(named)
    if policy == "name" and not usable:
        bad = next((p for (n, p), i in zip(records, named) if i is None or named.count(i) > 1), "")
        raise NativeFormatError(f"{bad}: image ids from file names are missing or repeated; "
                                f"use --image-ids sequential or a pairs file with ids")
    if policy == "name" or (policy == "auto" and usable):
        for (native, _), image_id in zip(records, named):
            native.image_id = image_id
        return "name"
    taken = {n.image_id for n, _ in records if n.image_id is not None}
    next_id = 1
    for native, _ in sorted(records, key=lambda r: os.path.basename(r[1])):
        if native.image_id is None:
            while next_id in taken:
                next_id += 1
            native.image_id = next_id
            taken.add(next_id)
    return "sequential"
