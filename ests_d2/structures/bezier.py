"""Text boundaries as cubic Bezier curves, and the polygon helpers around them.

A text instance has 8 control points: the top curve left->right, then the bottom curve right->left; the model
predicts 16 boundary points sampled from them. numpy in, numpy out without importing torch (data loading and
the evaluation tool); torch tensors in, tensors out.
"""
from typing import Optional

import numpy as np


def _linspace_like_torch(num_points: int) -> np.ndarray:
    """``torch.linspace(0, 1, num_points, dtype=float64)`` without torch: the first half forwards from 0, the
    second half backwards from 1, as torch's scalar kernel does (``np.linspace`` differs in the last bit at
    8 points). Equal bit for bit at the 8 points per curve every caller uses (tested); torch's vectorised
    kernel can differ from it by one ulp at some other counts."""
    if num_points == 1:
        return np.zeros(1)
    step = 1.0 / (num_points - 1)
    i = np.arange(num_points, dtype=np.float64)
    half = num_points // 2
    return np.where(i < half, step * i, 1.0 - step * (num_points - 1 - i))


def bernstein_weights(num_points: int = 8, dtype=np.float64) -> np.ndarray:
    """(num_points, 4) cubic Bernstein weights at u = linspace(0, 1, num_points), as a numpy array."""
    u = _linspace_like_torch(num_points)
    return np.stack([(1 - u) ** 3, 3 * u * (1 - u) ** 2, 3 * u**2 * (1 - u), u**3], axis=1).astype(dtype)


def _bernstein_weights_torch(num_points: int, dtype):
    import torch

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
    if isinstance(beziers, np.ndarray):  # numpy in, numpy out, without torch (data loading, once per annotation)
        if beziers.shape[-1] != 16:
            raise ValueError(f"expected 16 Bezier coordinates per instance, got shape {tuple(beziers.shape)}")
        dtype = beziers.dtype if np.issubdtype(beziers.dtype, np.floating) else np.float64
        weights = bernstein_weights(num_points).astype(dtype)
        ctrl = beziers.astype(dtype, copy=False).reshape(*beziers.shape[:-1], 2, 4, 2)  # (..., curve, point, xy)
        points = np.einsum("kp,...cpd->...ckd", weights, ctrl)  # (..., curve, num_points, xy)
    else:
        import torch

        beziers = torch.as_tensor(beziers)
        if beziers.shape[-1] != 16:
            raise ValueError(f"expected 16 Bezier coordinates per instance, got shape {tuple(beziers.shape)}")
        dtype = beziers.dtype if beziers.is_floating_point() else torch.float64
        weights = _bernstein_weights_torch(num_points, dtype)
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
