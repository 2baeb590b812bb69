"""Text polygons -> the two cubic Bezier curves of ABCNet / ESTS labels, with the fitting error.

A text polygon is a ring of n >= 4 vertices. It is first brought to the label convention -- clockwise on screen
(positive shoelace sum in image coordinates, y down), starting at the top-left corner of the word -- then split
into a top side (left -> right) and a bottom side (right -> left):

- 4 points: top = p0 p1, bottom = p2 p3 (quadrilaterals give exact straight lines);
- an even count with ``split="half"`` (Total-Text, CTW1500: the annotation tools put as many points on each long
  side): top = the first n/2 points, bottom = the rest;
- otherwise (``split="corners"``, e.g. an odd count): the three vertices after p0 that turn most sharply are the
  top-right, bottom-right and bottom-left corners. Vertices strictly between the top-right and bottom-right
  corners, or after the bottom-left one, lie on the short end edges and belong to neither curve;
- ``start="auto"`` (polygons drawn in any order, e.g. LabelMe): the four sharpest vertices are the corners; the
  pair of opposite chains at least twice as long as the other pair are the long sides (else, for short words,
  the more horizontal pair), and the top side is the one running rightwards on screen (for vertical text: the
  one running downwards); the ring is rotated to start there.

Each side is resampled at ``SAMPLES_PER_SIDE`` points equally spaced in arc length (its chord-length
parameterisation, t = i / (m - 1)); the end control points are pinned to the side's end vertices and the two
inner ones solved by least squares with the cubic Bernstein weights. This reproduces the reference COCO-text
jsons to their 2-decimal rounding; a straight side gives P0 + (P3 - P0) / 3 and P0 + 2 (P3 - P0) / 3 exactly.

The fitting error is the Hausdorff distance (px) between the native polygon's boundary and the fitted boundary
(top curve, right end edge, bottom curve, left end edge), both densely sampled.
"""
from dataclasses import dataclass
from typing import Tuple

import numpy as np
import shapely

SAMPLES_PER_SIDE = 20  # arc-length samples per side for the least squares (the reference jsons' value)
_CURVE_SAMPLES = 64  # points per fitted curve when measuring the error (polyline error << 0.01 px for text)
_BOUNDARY_STEP = 0.5  # px between the samples of the native boundary when measuring the error
_MIN_AREA = 1e-6  # px^2: a ring enclosing less is degenerate
_LONG_SIDE_RATIO = 2.0  # auto start: opposite chains this much longer are the long sides, whatever their direction


class PolygonGeometryError(ValueError):
    """A polygon that cannot be fitted (fewer than 4 distinct points, zero area)."""


@dataclass
class FittedText:
    """One fitted text polygon.

    ``ring``: the native vertices clockwise from the top-left corner (the json's ``segmentation``);
    ``beziers``: 16 floats, top curve left -> right then bottom curve right -> left; ``n_top`` / ``n_bottom``:
    vertices of each side (top = ring[:n_top], bottom = ring[bottom_start:bottom_start + n_bottom]);
    ``fit_error``: max boundary distance in px; ``text_height``: area / mean side length, in px.
    """

    ring: np.ndarray
    beziers: np.ndarray
    n_top: int
    n_bottom: int
    bottom_start: int
    fit_error: float
    text_height: float


def signed_area(points: np.ndarray) -> float:
    """Shoelace area, positive for a ring that runs clockwise on screen (image coordinates, y down)."""
    x, y = points[:, 0], points[:, 1]
    return float(np.dot(x, np.roll(y, -1)) - np.dot(np.roll(x, -1), y)) / 2.0


def _cubic_weights(t: np.ndarray) -> np.ndarray:
    return np.stack([(1 - t) ** 3, 3 * t * (1 - t) ** 2, 3 * t**2 * (1 - t), t**3], axis=1)


def resample_polyline(points: np.ndarray, num: int) -> np.ndarray:
    """``num`` points equally spaced in arc length along an open polyline (its ends included)."""
    seg = np.linalg.norm(np.diff(points, axis=0), axis=1)
    s = np.concatenate([[0.0], np.cumsum(seg)])
    u = np.linspace(0.0, s[-1], num)
    return np.stack([np.interp(u, s, points[:, 0]), np.interp(u, s, points[:, 1])], axis=1)


def fit_cubic_side(points: np.ndarray, num_samples: int = SAMPLES_PER_SIDE) -> np.ndarray:
    """(4, 2) control points of one side: ends pinned, inner two by least squares over the arc-length samples."""
    samples = resample_polyline(points, num_samples)
    weights = _cubic_weights(np.linspace(0.0, 1.0, num_samples))
    rhs = samples - np.outer(weights[:, 0], points[0]) - np.outer(weights[:, 3], points[-1])
    inner, *_ = np.linalg.lstsq(weights[:, 1:3], rhs, rcond=None)
    return np.vstack([points[0], inner, points[-1]])


def _turn_angles(ring: np.ndarray) -> np.ndarray:
    """Exterior angle (radians, 0 = straight on) at every vertex of a closed ring."""
    incoming = ring - np.roll(ring, 1, axis=0)
    outgoing = np.roll(ring, -1, axis=0) - ring
    cross = incoming[:, 0] * outgoing[:, 1] - incoming[:, 1] * outgoing[:, 0]
    dot = (incoming * outgoing).sum(axis=1)
    return np.abs(np.arctan2(cross, dot))


def _clockwise(points: np.ndarray, start: str) -> np.ndarray:
    """The ring clockwise on screen. ``first``: p0 is the top-left corner whatever the direction (an
    anticlockwise ring keeps p0 and reverses the rest, ICDAR style); ``last``: anticlockwise files whose
    last point is the top-left corner (the official eval zips): reversed as a whole."""
    if signed_area(points) > 0:
        return points
    return points[::-1].copy() if start == "last" else np.concatenate([points[:1], points[1:][::-1]])


def _rotate_to_top_left(ring: np.ndarray) -> np.ndarray:
    """``start="auto"``: rotate a clockwise ring so that it starts at the top-left corner (module docstring)."""
    corners = np.sort(np.argsort(-_turn_angles(ring), kind="stable")[:4])
    n = len(ring)
    chains = [ring[np.arange(a, b + (n if b < a else 0) + 1) % n] for a, b in zip(corners, np.roll(corners, -1))]
    lengths = [np.linalg.norm(np.diff(c, axis=0), axis=1).sum() for c in chains]

    def top_of(pair):  # of two opposite chains, the one running rightwards (downwards when vertical)
        da, db = chains[pair][-1] - chains[pair][0], chains[pair + 2][-1] - chains[pair + 2][0]
        return pair if (da[0], da[1]) >= (db[0], db[1]) else pair + 2

    def rightwards(k):
        d = chains[k][-1] - chains[k][0]
        return d[0] / max(np.linalg.norm(d), 1e-9)

    pair_lengths = (lengths[0] + lengths[2], lengths[1] + lengths[3])
    if max(pair_lengths) >= _LONG_SIDE_RATIO * min(pair_lengths):
        pair = int(np.argmax(pair_lengths))
    else:  # short words: the sides' lengths say little, most text runs horizontally
        pair = 0 if rightwards(top_of(0)) >= rightwards(top_of(1)) else 1
    return np.roll(ring, -corners[top_of(pair)], axis=0)


def split_sides(ring: np.ndarray, split: str) -> Tuple[int, int, int]:
    """(n_top, bottom_start, n_bottom) of a clockwise ring starting at the top-left corner."""
    n = len(ring)
    if n == 4:
        return 2, 2, 2
    if split == "half" and n % 2 == 0:
        return n // 2, n // 2, n // 2
    angles = _turn_angles(ring)[1:]
    top_end, bottom_start, bottom_end = np.sort(np.argsort(-angles, kind="stable")[:3] + 1)
    return int(top_end) + 1, int(bottom_start), int(bottom_end - bottom_start) + 1


def _max_distance_to(points: np.ndarray, line: np.ndarray) -> float:
    """The largest distance from the points (p, 2) to the polyline ``line`` (k, 2)."""
    return float(shapely.distance(shapely.points(points), shapely.LineString(line)).max())


def _densify(line: np.ndarray, step: float) -> np.ndarray:
    """Points every ``step`` px or closer along the polyline ``line`` (k, 2), its last point excluded."""
    seg = np.diff(line, axis=0)
    counts = np.maximum(1, np.ceil(np.linalg.norm(seg, axis=1) / step)).astype(np.int64)
    first = np.repeat(np.cumsum(counts) - counts, counts)
    frac = (np.arange(counts.sum()) - first) / np.repeat(counts, counts)
    return np.repeat(line[:-1], counts, axis=0) + frac[:, None] * np.repeat(seg, counts, axis=0)


def fit_error(ring: np.ndarray, beziers: np.ndarray) -> float:
    """Hausdorff distance (px) between the polygon's boundary and the fitted Bezier boundary."""
    weights = _cubic_weights(np.linspace(0.0, 1.0, _CURVE_SAMPLES))
    ctrl = beziers.reshape(2, 4, 2)
    fitted = np.vstack([weights @ ctrl[0], weights @ ctrl[1], ctrl[0, :1]])  # closed by the left end edge
    native = np.vstack([ring, ring[:1]])
    return max(_max_distance_to(_densify(native, _BOUNDARY_STEP), fitted),
               _max_distance_to(_densify(fitted, _BOUNDARY_STEP), native))


def fit_text_polygon(points, start: str = "first", split: str = "corners") -> FittedText:
    """Fit one text polygon (n, 2) given in the file's order.

    Args:
        start: where the ring starts -- ``"first"`` (p0 is the top-left corner), ``"last"`` (anticlockwise with
            the top-left corner last: the official eval zips) or ``"auto"`` (find it; module docstring).
        split: ``"half"`` (even counts: half the points on each side) or ``"corners"`` (sharpest vertices).
    Raises:
        PolygonGeometryError: fewer than 4 points, repeated consecutive points only, or zero area.
    """
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    keep = np.ones(len(pts), dtype=bool)  # drop consecutive duplicates: they have no direction to turn by
    keep[1:] = np.any(pts[1:] != pts[:-1], axis=1)
    pts = pts[keep]
    if len(pts) > 1 and np.array_equal(pts[0], pts[-1]):
        pts = pts[:-1]  # a closed ring written with its first point repeated
    if len(pts) < 4:
        raise PolygonGeometryError(f"needs at least 4 distinct points, has {len(pts)}")
    area = signed_area(pts)
    if abs(area) < _MIN_AREA:
        raise PolygonGeometryError("the polygon encloses no area")
    ring = _clockwise(pts, start)
    if start == "auto":
        ring = _rotate_to_top_left(ring)
    n_top, bottom_start, n_bottom = split_sides(ring, split)
    top, bottom = ring[:n_top], ring[bottom_start:bottom_start + n_bottom]
    beziers = np.concatenate([fit_cubic_side(top), fit_cubic_side(bottom)]).reshape(-1)
    side_length = (np.linalg.norm(np.diff(top, axis=0), axis=1).sum()
                   + np.linalg.norm(np.diff(bottom, axis=0), axis=1).sum()) / 2
    return FittedText(ring=ring, beziers=beziers, n_top=n_top, n_bottom=n_bottom, bottom_start=bottom_start,
                      fit_error=fit_error(ring, beziers), text_height=abs(area) / max(side_length, 1e-9))
