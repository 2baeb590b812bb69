"""Write evaluation ground truth in the official ESTS / AdelaiDet zip format.

One member per image, ``{image_id:07d}.txt`` at the zip root, UTF-8 with LF line endings, one line per
instance: ``x1,y1,...,xn,yn,####transcription`` with integer coordinates; ``###`` marks don't care.
The official zips store the polygons counter-clockwise on screen, starting from the first annotated
point (ICDAR2015 ``p1,p2,p3,p4`` is written ``p1,p4,p3,p2``); annotations here run clockwise (top side
left->right, then bottom side right->left), so the writer keeps the first point and reverses the rest.
"""
import zipfile
from typing import Dict, Iterable, Sequence, Tuple

import numpy as np

DONT_CARE = "###"
_FIXED_ZIP_TIME = (2020, 1, 1, 0, 0, 0)  # constant member timestamps: same labels -> byte-identical zip


def eval_gt_line(polygon: Sequence[float], text: str) -> str:
    """One GT line from a clockwise flat x,y polygon (rounded to integer pixels)."""
    pts = np.rint(np.asarray(polygon, dtype=np.float64).reshape(-1, 2)).astype(np.int64)
    pts = np.concatenate([pts[:1], pts[1:][::-1]])
    return ",".join(str(v) for v in pts.reshape(-1)) + ",####" + text


def write_eval_gt_zip(path: str, gt_by_image: Dict[int, Iterable[Tuple[Sequence[float], str]]]) -> None:
    """Write ``{image_id: [(clockwise flat polygon, transcription or "###"), ...]}`` as an eval GT zip.

    Every image gets a member, even without instances: the official script scores every GT member.
    """
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for image_id in sorted(gt_by_image):
            lines = [eval_gt_line(poly, text) for poly, text in gt_by_image[image_id]]
            info = zipfile.ZipInfo(f"{int(image_id):07d}.txt", date_time=_FIXED_ZIP_TIME)
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, "".join(line + "\n" for line in lines))


def read_eval_gt_zip(path: str) -> Dict[int, list]:
    """Parse an official-format GT zip into ``{image_id: [(points (n, 2) float array, text), ...]}``."""
    out = {}
    with zipfile.ZipFile(path) as zf:
        for member in zf.namelist():
            stem = member.rsplit("/", 1)[-1]
            if not stem.endswith(".txt") or not stem[:-4].isdigit():
                raise ValueError(f"{path}: member '{member}' is not named <digits>.txt")
            instances = []
            for lineno, line in enumerate(zf.read(member).decode("utf-8-sig").splitlines(), 1):
                if not line.strip():
                    continue
                coords, sep, text = line.strip().partition(",####")
                if not sep:
                    raise ValueError(f"{path}:{member}:{lineno}: no ',####' separator")
                values = np.array([float(v) for v in coords.split(",")])
                if values.size % 2 or values.size < 6:
                    raise ValueError(f"{path}:{member}:{lineno}: {values.size} coordinates, need an even count >= 6")
                instances.append((values.reshape(-1, 2), text))
            out[int(stem[:-4])] = instances
    return out
