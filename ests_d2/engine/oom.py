"""Out-of-memory detection and the smaller batch a failed step is retried with."""
from typing import List, Optional, Sequence

import torch
import torch.nn.functional as F
from detectron2.structures import Boxes, Instances

__all__ = ["InjectedOutOfMemoryError", "is_out_of_memory", "shrink_batch", "POINT_FIELDS"]

# Instances fields holding flat (x, y, x, y, ...) absolute pixel coordinates, rescaled with the image
# (``gt_beziers``: the mapper contract's (n, 16) Bezier control points). Other tensor fields (classes,
# recognition ids) do not depend on the image size.
POINT_FIELDS = ("gt_beziers", "gt_polygons", "gt_boundary")


class InjectedOutOfMemoryError(torch.cuda.OutOfMemoryError):
    """A simulated CUDA OOM (``SOLVER.OOM.INJECT_AT_ITERS``), so recovery can be tested without a GPU."""


def is_out_of_memory(error: BaseException) -> bool:
    """A CUDA allocator failure, however torch reported it."""
    if isinstance(error, torch.cuda.OutOfMemoryError):
        return True
    return isinstance(error, RuntimeError) and "out of memory" in str(error)


def _resize_image(image: torch.Tensor, size) -> torch.Tensor:
    """(C, H, W) image of any dtype -> (C, h, w) of the same dtype (bilinear with antialiasing)."""
    resized = F.interpolate(image[None].float(), size=size, mode="bilinear", align_corners=False, antialias=True)[0]
    if image.dtype == torch.uint8:
        resized = resized.round().clamp(0, 255)
    return resized.to(image.dtype)


def _rescale_instances(instances: Instances, new_size, sx: float, sy: float) -> Instances:
    out = Instances(tuple(new_size))
    for name, value in instances.get_fields().items():
        if isinstance(value, Boxes):
            value = value.clone()
            value.scale(sx, sy)
        elif name in POINT_FIELDS:
            scale = value.new_tensor([sx, sy]).repeat(value.shape[-1] // 2)
            value = value * scale
        out.set(name, value)
    return out


def shrink_batch(batch: List[dict], min_size_choices: Sequence[int]) -> Optional[List[dict]]:
    """The batch rescaled so that its largest short side becomes the next smaller training size.

    Args:
        batch: mapped dicts with ``image`` (C, H, W) and optionally ``instances`` (absolute pixel
            coordinates of that image).
        min_size_choices: ``INPUT.MIN_SIZE_TRAIN``.

    Returns:
        New dicts (the inputs are not modified; ``height``/``width``, the original image size, are
        kept), or None when no choice is smaller than the current short side.
    """
    short = max(min(d["image"].shape[-2:]) for d in batch)
    smaller = [s for s in min_size_choices if s < short]
    if not smaller:
        return None
    factor = max(smaller) / short
    shrunk = []
    for d in batch:
        h, w = d["image"].shape[-2:]
        new_size = (max(1, round(h * factor)), max(1, round(w * factor)))
        new = dict(d)
        new["image"] = _resize_image(d["image"], new_size)
        if "instances" in d:
            new["instances"] = _rescale_instances(d["instances"], new_size, new_size[1] / w, new_size[0] / h)
        shrunk.append(new)
    return shrunk
