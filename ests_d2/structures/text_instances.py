"""Training targets in the mapper's contract, made directly (tests, benchmarks, the memory planner)."""
from typing import Tuple

import torch
from detectron2.structures import Boxes, Instances


def straight_text_instances(image_size: Tuple[int, int], boxes, rec) -> Instances:
    """Targets for straight, axis-aligned words that fill ``boxes``.

    Each word's top curve runs along its box's top side (left->right) and its bottom curve along the bottom
    side (right->left), control points evenly spaced.

    Args:
        image_size: (height, width); boxes: (n, 4) XYXY; rec: (n, T) class ids.
    """
    boxes = torch.as_tensor(boxes, dtype=torch.float32).reshape(-1, 4)
    beziers = []
    for x0, y0, x1, y1 in boxes.tolist():
        top = torch.linspace(x0, x1, 4)
        beziers.append(torch.stack([torch.cat([top, top.flip(0)]), torch.tensor([y0] * 4 + [y1] * 4)], 1).flatten())
    instances = Instances(tuple(image_size))
    instances.gt_boxes = Boxes(boxes)
    instances.gt_classes = torch.zeros(len(boxes), dtype=torch.int64)
    instances.gt_beziers = torch.stack(beziers).float() if beziers else torch.zeros(0, 16)
    instances.gt_rec = torch.as_tensor(rec, dtype=torch.int64)
    return instances
