"""Write evaluation ground truth in the official ESTS / AdelaiDet zip format.

One member per image, ``{image_id:07d}.txt`` at the zip root, UTF-8 with LF line endings, one line per
instance: ``x1,y1,...,xn,yn,####transcription`` with integer coordinates; ``###`` marks don't care.
The official zips store the polygons counter-clockwise on screen, starting from the first annotated
point (ICDAR2015 ``p1,p2,p3,p4`` is written ``p1,p4,p3,p2``); annotations here run clockwise (top side
left->right, then bottom side right->left), so the writer keeps the first point and reverses the rest.
"""
from typing import Dict, Iterable, Sequence, Tuple

import numpy as np

from ests_d2.evaluation.rrc_format import DONT_CARE, format_line, member_name, write_zip

__all__ = ["DONT_CARE", "eval_gt_line", "write_eval_gt_zip"]


def eval_gt_line(polygon: Sequence[float], text: str) -> str:
    """One GT line from a clockwise flat x,y polygon (rounded to integer pixels)."""
    pts = np.rint(np.asarray(polygon, dtype=np.float64).reshape(-1, 2)).astype(np.int64)
    return format_line(np.concatenate([pts[:1], pts[1:][::-1]]).tolist(), text)


def write_eval_gt_zip(path: str, gt_by_image: Dict[int, Iterable[Tuple[Sequence[float], str]]]) -> None:
    """Write ``{image_id: [(clockwise flat polygon, transcription or "###"), ...]}`` as an eval GT zip.

    Every image gets a member, even without instances: the official script scores every GT member.
    """
    write_zip(path, {member_name(image_id): [eval_gt_line(poly, text) for poly, text in instances]
                     for image_id, instances in gt_by_image.items()})
