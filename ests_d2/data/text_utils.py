"""Text representation shared by the data path, the model and the evaluator.

Recognition targets are ``max_text_len`` class ids per instance. For the EN vocabulary (V = 97) ids
0..94 are the printable ASCII characters (id = ord(ch) - 32), 95 is "unknown" and 96 is padding.
Text boundaries are cubic Bezier curves (8 control points: top curve left->right, bottom curve
right->left); the model predicts 16 boundary points sampled from them.
"""
from typing import List, Optional, Sequence, Tuple

import numpy as np
import torch

UNKNOWN_GLYPH = "\u53e3"  # '口': how the official decoder prints the unknown class
EN_CHARACTERS = [chr(c) for c in range(32, 127)]


class CharVocabulary:
    """Maps characters to recognition class ids: the characters, then ``unknown``, then ``padding``."""

    def __init__(self, characters: Sequence[str]):
        if len(set(characters)) != len(characters):
            raise ValueError("the character list contains duplicates")
        self.characters = list(characters)
        self._index = {c: i for i, c in enumerate(self.characters)}

    @classmethod
    def from_config(cls, voc_size: int, custom_dict: str = "") -> "CharVocabulary":
        """The EN vocabulary for ``voc_size == 97``; otherwise one character per line of ``custom_dict``."""
        if custom_dict:
            with open(custom_dict, encoding="utf-8") as f:
                chars = [line.rstrip("\n") for line in f if line.rstrip("\n")]
            vocab = cls(chars)
        else:
            vocab = cls(EN_CHARACTERS)
        if vocab.num_classes != voc_size:
            src = custom_dict or "the built-in EN character list"
            raise ValueError(
                f"MODEL.ESTS.VOC_SIZE is {voc_size} but {src} gives {len(vocab.characters)} characters "
                f"+ unknown + padding = {vocab.num_classes} classes"
            )
        return vocab

    @property
    def unknown_id(self) -> int:
        return len(self.characters)

    @property
    def pad_id(self) -> int:
        return len(self.characters) + 1

    @property
    def num_classes(self) -> int:
        return len(self.characters) + 2

    def encode(self, text: str, max_len: int) -> List[int]:
        """Class ids of ``text``, truncated to ``max_len`` and padded with ``pad_id``."""
        ids = [self._index.get(c, self.unknown_id) for c in text[:max_len]]
        return ids + [self.pad_id] * (max_len - len(ids))

    def decode(self, ids: Sequence[int]) -> str:
        """Official decoding: padding is skipped (not a terminator), unknown prints as '口'."""
        out = []
        for i in ids:
            i = int(i)
            if 0 <= i < len(self.characters):
                out.append(self.characters[i])
            elif i == self.unknown_id:
                out.append(UNKNOWN_GLYPH)
        return "".join(out)


class TextList(list):
    """A list of strings that can be indexed like a tensor field of ``Instances``.

    detectron2's ``Instances[...]`` indexes every field with the same index (a bool mask, an index tensor,
    a list or a slice); a plain list only accepts ints and slices, so ``instances[scores > t]`` would fail.
    """

    def __getitem__(self, item):
        if isinstance(item, slice):
            return TextList(super().__getitem__(item))
        if isinstance(item, (torch.Tensor, np.ndarray)) or isinstance(item, (list, tuple)):
            index = torch.as_tensor(item)
            if index.dtype == torch.bool:
                if len(index) != len(self):
                    raise IndexError(f"boolean mask of length {len(index)} for {len(self)} texts")
                index = index.nonzero().flatten()
            if index.dim() == 0:
                return super().__getitem__(int(index))
            return TextList(super(TextList, self).__getitem__(int(i)) for i in index.tolist())
        return super().__getitem__(item)


def bernstein_weights(num_points: int = 8, dtype=torch.float64) -> torch.Tensor:
    """(num_points, 4) cubic Bernstein weights at u = linspace(0, 1, num_points)."""
    u = torch.linspace(0, 1, num_points, dtype=dtype)
    return torch.stack([(1 - u) ** 3, 3 * u * (1 - u) ** 2, 3 * u**2 * (1 - u), u**3], dim=1)


def bezier_to_polygon(beziers, num_points: int = 8):
    """Sample both cubic curves of each instance.

    Args:
        beziers: (..., 16) control points x0,y0,...,x7,y7 (top curve, then bottom curve), tensor or array.
    Returns:
        (..., 4 * num_points) polygon: ``num_points`` top points then ``num_points`` bottom points,
        flattened as x,y pairs; same type and dtype as the input.
    """
    if not isinstance(beziers, np.ndarray):
        beziers = torch.as_tensor(beziers)
    if beziers.shape[-1] != 16:
        raise ValueError(f"expected 16 Bezier coordinates per instance, got shape {tuple(beziers.shape)}")
    if isinstance(beziers, np.ndarray):  # numpy in, numpy out, without torch (data loading, once per annotation)
        dtype = beziers.dtype if np.issubdtype(beziers.dtype, np.floating) else np.float64
        weights = bernstein_weights(num_points).numpy().astype(dtype)
        ctrl = beziers.astype(dtype, copy=False).reshape(*beziers.shape[:-1], 2, 4, 2)  # (..., curve, point, xy)
        points = np.einsum("kp,...cpd->...ckd", weights, ctrl)  # (..., curve, num_points, xy)
    else:
        weights = bernstein_weights(num_points, dtype=beziers.dtype if beziers.is_floating_point() else torch.float64)
        ctrl = beziers.to(weights.dtype).reshape(*beziers.shape[:-1], 2, 4, 2)
        points = torch.einsum("kp,...cpd->...ckd", weights, ctrl)
    return points.reshape(*points.shape[:-3], 4 * num_points)


def shoelace_area(points: np.ndarray) -> float:
    """|signed area| of the closed contour through ``points`` (k, 2) (also Polygon3's ``area()``)."""
    p = np.asarray(points, dtype=np.float64)
    x, y = p[:, 0], p[:, 1]
    return abs(float(np.dot(x, np.roll(y, -1)) - np.dot(np.roll(x, -1), y))) / 2.0


def polygon_to_points(polygon, num_points: Optional[int] = None) -> np.ndarray:
    """A flat x,y,... polygon as an (n, 2) array."""
    pts = np.asarray(polygon, dtype=np.float64).reshape(-1, 2)
    if num_points is not None and len(pts) != num_points:
        raise ValueError(f"expected {num_points} points, got {len(pts)}")
    return pts


def straight_text_instances(image_size: Tuple[int, int], boxes, rec) -> "Instances":
    """Training targets in the mapper's contract for straight, axis-aligned words that fill ``boxes``.

    Each word's top curve runs along its box's top side (left->right) and its bottom curve along the bottom
    side (right->left), control points evenly spaced: the synthetic inputs of tests and benchmarks.

    Args:
        image_size: (height, width); boxes: (n, 4) XYXY; rec: (n, T) class ids.
    """
    from detectron2.structures import Boxes, Instances

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
