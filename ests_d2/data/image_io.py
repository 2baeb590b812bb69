"""Reading training / test images, with an error that names the file and its dataset, and an optional pre-check.

``read_text_image`` is detectron2's ``read_image`` (same EXIF handling, same conversion, so 8-bit images
come out bit-identical) plus two things:

- 16-bit grayscale images (PIL modes ``I;16*`` / ``I``, e.g. 16-bit PNGs) are scaled to 8 bits
  (``round(v / 257)``). PIL's own conversion clips every value above 255, so such an image used to
  become all white. Floating-point images (mode ``F``) are refused.
- any failure (empty file, not an image, truncated data) raises ``ImageReadError`` naming the file and
  the registered dataset(s) whose image folder holds it; in a DataLoader worker this message is what
  reaches the training log.

``verify_image_files`` is the cheap pre-check ``load_text_json(..., verify_images=True)`` runs on a whole
dataset so that a bad file stops the run when it starts rather than hours into it.
"""
import os
from typing import Dict, List, Optional

import numpy as np
from detectron2.data import MetadataCatalog
from detectron2.data import detection_utils as utils
from detectron2.utils.file_io import PathManager
from PIL import Image

__all__ = ["ImageReadError", "read_text_image", "verify_image_files"]

_SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")  # "I": 16-bit PNGs in older Pillow versions
_EXIF_ORIENTATION = 0x0112
_SWAPPED_ORIENTATIONS = (5, 6, 7, 8)  # EXIF orientations that transpose the image
_TAIL_BYTES = 1024  # how much of the end of a file the pre-check reads to find the end marker
_END_MARKERS = {"JPEG": b"\xff\xd9", "PNG": b"IEND"}  # a complete file of this format ends with this


class ImageReadError(OSError):
    """An image that cannot be used for training / inference; the message names the file and its dataset."""


def datasets_holding(file_name: str) -> List[str]:
    """Names of the registered datasets whose ``image_root`` contains ``file_name`` (for error messages)."""
    path = os.path.abspath(file_name)
    names = []
    for name in MetadataCatalog.list():
        root = MetadataCatalog.get(name).get("image_root", None)
        if root and path.startswith(os.path.join(os.path.abspath(root), "")):
            names.append(name)
    return names


def _where(file_name: str) -> str:
    names = datasets_holding(file_name)
    return f"{file_name} (dataset {', '.join(repr(n) for n in names)})" if names else file_name


def _to_8bit(image: Image.Image) -> Image.Image:
    """16-bit grayscale -> 8-bit ``L`` (``round(v / 257)`` maps 0..65535 onto 0..255); other modes unchanged."""
    if image.mode == "F":
        raise ValueError("a floating-point image (PIL mode 'F'); convert it to 8 bits per channel")
    if image.mode not in _SIXTEEN_BIT_MODES:
        return image
    values = np.asarray(image).astype(np.int64)
    if values.size and (values.min() < 0 or values.max() > 65535):
        raise ValueError(f"a 32-bit integer image with values in [{values.min()}, {values.max()}], "
                         f"not a 16-bit one; convert it to 8 bits per channel")
    return Image.fromarray(((values + 128) // 257).astype(np.uint8), mode="L")


def read_text_image(file_name: str, image_format: str) -> np.ndarray:
    """detectron2's ``read_image(file_name, format=image_format)``, reading 16-bit grayscale correctly.

    Raises:
        ImageReadError: the file is missing, empty, not an image, truncated or of an unusable kind; the
            message names the file and its dataset.
    """
    try:
        with PathManager.open(file_name, "rb") as f:
            image = Image.open(f)
            # detectron2's own EXIF step (not ImageOps.exif_transpose) keeps pixels identical to read_image
            image = utils._apply_exif_orientation(image)
            return utils.convert_PIL_to_numpy(_to_8bit(image), image_format)
    except Exception as e:  # any decoder failure: say which file, whatever the decoder says
        raise ImageReadError(f"{_where(file_name)}: cannot read the image: {_reason(e)}") from e


def _reason(error: Exception) -> str:
    message = str(error).splitlines()[0] if str(error) else ""
    return f"{type(error).__name__}: {message}" if message else type(error).__name__


def _looks_complete(file_name: str, image_format: Optional[str]) -> bool:
    """Whether the end of the file holds its format's end marker (a JPEG / PNG cut short does not)."""
    marker = _END_MARKERS.get(image_format)
    if marker is None:
        return False
    with open(file_name, "rb") as f:
        f.seek(max(os.path.getsize(file_name) - _TAIL_BYTES, 0))
        return marker in f.read()


def image_file_problem(file_name: str, width: int, height: int) -> Optional[str]:
    """What is wrong with one image file, or None.

    Cheap: it decodes the header (format, size, EXIF orientation) and reads the last kilobyte. Only a file
    whose end marker is missing, or a format without one (BMP, TIFF, ...), is decoded in full.
    """
    try:
        if os.path.getsize(file_name) == 0:
            return "empty file (0 bytes)"
        with Image.open(file_name) as image:
            if image.mode == "F":
                return "a floating-point image (PIL mode 'F'); convert it to 8 bits per channel"
            w, h = image.size
            if image.getexif().get(_EXIF_ORIENTATION) in _SWAPPED_ORIENTATIONS:
                w, h = h, w
            if (w, h) != (width, height):
                return f"the image is {w}x{h} but the json says {width}x{height} (width x height)"
            if not _looks_complete(file_name, image.format):
                image.load()  # the full decode says whether it is really truncated
    except Exception as e:
        return _reason(e)
    return None


def verify_image_files(source: str, dataset_dicts: List[Dict]) -> None:
    """Check every image of ``dataset_dicts`` with ``image_file_problem``; raise listing the bad ones.

    Args:
        source: the json file (and dataset name), for the message.
    Raises:
        ImageReadError: naming up to 5 bad files and what is wrong with each.
    """
    problems = []
    for d in dataset_dicts:
        problem = image_file_problem(d["file_name"], d["width"], d["height"])
        if problem is not None:
            problems.append(f"'{d['file_name']}': {problem}")
    if problems:
        more = f"; and {len(problems) - 5} more" if len(problems) > 5 else ""
        raise ImageReadError(f"{source}: {len(problems)} of {len(dataset_dicts)} images cannot be used: "
                             f"{'; '.join(problems[:5])}{more}")
