"""Polygon areas and intersections with the semantics of the Polygon3 library the official script uses.

Polygon3 (GPC) takes the vertices as one contour, reports ``area()`` as the absolute shoelace sum of
that contour, and clips with the even-odd fill rule. For simple polygons this is plain geometry; for
self-intersecting ones (possible only in predictions scored "as given", never in the official GT zips
or after the official invalid-polygon removal) it gives e.g. area 0 for a symmetric bow-tie while the
intersection with a square is 50. We reproduce both with shapely.
"""
from typing import List, Sequence

import numpy as np
import shapely
from shapely.geometry import LinearRing, Point, Polygon

from ests_d2.structures import shoelace_area

from .rrc_format import RRCFormatError


def _inside_even_odd(points: np.ndarray, pt: Point) -> bool:
    """Crossing-number test of ``pt`` against the contour (valid for points off the contour)."""
    x, y = pt.x, pt.y
    xi, yi = points[:, 0], points[:, 1]
    xj, yj = np.roll(xi, 1), np.roll(yi, 1)
    straddles = (yi > y) != (yj > y)
    with np.errstate(divide="ignore", invalid="ignore"):
        x_cross = (xj - xi) * (y - yi) / (yj - yi) + xi
    return bool(np.count_nonzero(straddles & (x < x_cross)) % 2)


def even_odd_region(points: np.ndarray, where: str = "polygon"):
    """The shapely geometry covered by the contour under the even-odd rule.

    Raises:
        RRCFormatError: fewer than 3 points (Polygon3 refuses such a contour, which stops the official run).
    """
    p = np.asarray(points, dtype=np.float64)
    if len(p) < 3:
        raise RRCFormatError(f"{where}: a polygon needs at least 3 points, got {len(p)}")
    poly = Polygon(p)
    if poly.is_valid:
        return poly
    noded = shapely.node(LinearRing(p))
    faces = shapely.get_parts(shapely.polygonize(shapely.get_parts(noded)))
    kept = [f for f in faces if not f.is_empty and _inside_even_odd(p, f.point_on_surface())]
    return shapely.union_all(kept) if kept else Polygon()


def intersection_areas(gt_regions: Sequence, gt_boxes: np.ndarray, det_regions: Sequence, det_boxes: np.ndarray):
    """(G, D) float64 intersection areas; pairs whose bounding boxes do not overlap are 0 without clipping.

    Args:
        gt_boxes, det_boxes: (G, 4) / (D, 4) x0, y0, x1, y1 of each polygon's points.
    """
    inter = np.zeros((len(gt_regions), len(det_regions)), dtype=np.float64)
    if inter.size == 0:
        return inter
    overlap = (
        (gt_boxes[:, None, 0] <= det_boxes[None, :, 2])
        & (det_boxes[None, :, 0] <= gt_boxes[:, None, 2])
        & (gt_boxes[:, None, 1] <= det_boxes[None, :, 3])
        & (det_boxes[None, :, 1] <= gt_boxes[:, None, 3])
    )
    gi, di = np.nonzero(overlap)
    if len(gi):
        g = np.asarray(gt_regions, dtype=object)[gi]
        d = np.asarray(det_regions, dtype=object)[di]
        inter[gi, di] = shapely.area(shapely.intersection(g, d))
    return inter


def make_polygons(point_sets: List[np.ndarray]):
    """shapely Polygons of (k_i, 2) point arrays, each with k_i >= 3, built in one vectorised call."""
    if not point_sets:
        return np.empty(0, dtype=object)
    counts = [len(p) for p in point_sets]
    coords = np.concatenate([np.asarray(p, dtype=np.float64).reshape(-1, 2) for p in point_sets])
    rings = shapely.linearrings(coords, indices=np.repeat(np.arange(len(point_sets)), counts))
    return shapely.polygons(rings)


def regions_and_boxes(point_sets: List[np.ndarray], where: str):
    """Even-odd regions, Polygon3 areas and bounding boxes (N, 4) of a list of (k, 2) point arrays."""
    for i, p in enumerate(point_sets):
        if len(p) < 3:
            raise RRCFormatError(f"{where} polygon {i + 1}: a polygon needs at least 3 points, got {len(p)}")
    regions = make_polygons(point_sets)
    areas = shapely.area(regions).astype(np.float64) if len(regions) else np.zeros(0)
    boxes = shapely.bounds(regions).reshape(-1, 4) if len(regions) else np.zeros((0, 4))
    for i in np.nonzero(~shapely.is_valid(regions))[0] if len(regions) else []:
        regions[i] = even_odd_region(point_sets[i], f"{where} polygon {i + 1}")
        areas[i] = shoelace_area(point_sets[i])
    return list(regions), areas, boxes
