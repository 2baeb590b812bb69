"""Bezier fitting of text polygons: exact lines for quadrilaterals, ring conventions, side splitting, the error."""
import numpy as np
import pytest

from ests_d2.data.preparation.bezier_fit import (PolygonGeometryError, fit_cubic_side, fit_error, fit_text_polygon,
                                                 signed_area)

QUAD = np.array([[10, 10], [40, 12], [41, 30], [9, 28]], dtype=float)  # clockwise on screen from the top-left


def _cubic(ctrl, t):
    t = np.asarray(t)[:, None]
    return (1 - t) ** 3 * ctrl[0] + 3 * t * (1 - t) ** 2 * ctrl[1] + 3 * t**2 * (1 - t) * ctrl[2] + t**3 * ctrl[3]


def test_quadrilateral_gives_exact_lines_with_zero_error():
    fitted = fit_text_polygon(QUAD)
    ctrl = fitted.beziers.reshape(8, 2)
    np.testing.assert_allclose(ctrl[1], QUAD[0] + (QUAD[1] - QUAD[0]) / 3)
    np.testing.assert_allclose(ctrl[2], QUAD[0] + 2 * (QUAD[1] - QUAD[0]) / 3)
    np.testing.assert_allclose(ctrl[5], QUAD[2] + (QUAD[3] - QUAD[2]) / 3)
    np.testing.assert_array_equal(fitted.ring, QUAD)
    assert (fitted.n_top, fitted.n_bottom) == (2, 2) and fitted.fit_error < 1e-9


def test_anticlockwise_quad_keeps_its_first_point():
    anticlockwise = QUAD[[0, 3, 2, 1]]
    assert signed_area(anticlockwise) < 0
    np.testing.assert_array_equal(fit_text_polygon(anticlockwise, start="first").ring, QUAD)


def test_eval_zip_rings_are_reversed_as_a_whole():
    hexagon = np.array([[0, 0], [50, -5], [100, 0], [100, 20], [50, 15], [0, 20]], dtype=float)  # clockwise
    eval_zip_order = hexagon[::-1]  # anticlockwise with the top-left corner last
    fitted = fit_text_polygon(eval_zip_order, start="last")
    np.testing.assert_array_equal(fitted.ring, hexagon)
    assert (fitted.n_top, fitted.n_bottom) == (3, 3)


def test_odd_count_splits_at_the_sharpest_corners():
    # 3 points on top, 2 on the bottom, one extra point in the middle of the left end edge
    ring = np.array([[0, 0], [50, -5], [100, 0], [100, 20], [0, 20], [-1, 10]], dtype=float)
    fitted = fit_text_polygon(ring, split="corners")
    assert (fitted.n_top, fitted.bottom_start, fitted.n_bottom) == (3, 3, 2)
    # ``half`` is only for even counts: 5 points fall back to the corners
    five = np.array([[0, 0], [50, -5], [100, 0], [100, 20], [0, 20]], dtype=float)
    assert fit_text_polygon(five, split="half").n_top == 3


def test_auto_start_finds_the_top_left_corner_of_a_rotated_ring():
    ring = np.array([[0, 0], [60, 0], [120, 5], [120, 25], [60, 20], [0, 20]], dtype=float)
    rolled = np.roll(ring, 3, axis=0)[::-1]  # anticlockwise, starting at the bottom-right
    fitted = fit_text_polygon(rolled, start="auto")
    np.testing.assert_array_equal(fitted.ring, ring)
    vertical = np.array([[20, 0], [20, 100], [0, 100], [0, 0]], dtype=float)  # clockwise, runs downwards on the right
    np.testing.assert_array_equal(fit_text_polygon(vertical[[2, 3, 0, 1]], start="auto").ring[0], [20, 0])


def test_a_sampled_cubic_is_recovered():
    ctrl = np.array([[0, 50], [30, 0], [90, 0], [120, 50]], dtype=float)
    side = _cubic(ctrl, np.linspace(0, 1, 40))
    fitted_side = fit_cubic_side(side)
    np.testing.assert_array_equal(fitted_side[[0, 3]], ctrl[[0, 3]])  # the ends are pinned
    # arc length is not the curve's own parameter, so the inner points differ, but the curve is the same
    dense = _cubic(fitted_side, np.linspace(0, 1, 200))
    assert np.linalg.norm(dense[:, None] - _cubic(ctrl, np.linspace(0, 1, 400))[None], axis=2).min(1).max() < 1.5
    top = side
    bottom = (side + [0, 20])[::-1]
    fitted = fit_text_polygon(np.vstack([top, bottom]), split="half")
    assert fitted.fit_error < 1.5


def test_fit_error_measures_the_distance_to_the_polygon():
    fitted = fit_text_polygon(QUAD)
    moved = fitted.beziers.copy()
    moved[3] += 4.0  # the top curve's second control point 4 px down
    assert 1.0 < fit_error(fitted.ring, moved) <= 4.0
    # a semicircle with 7 points per side cannot be one cubic: a large error is reported
    angle = np.linspace(np.pi, 0, 7)
    outer = np.stack([100 + 100 * np.cos(angle), 100 - 100 * np.sin(angle)], 1)
    inner = np.stack([100 + 60 * np.cos(angle[::-1]), 100 - 60 * np.sin(angle[::-1])], 1)
    arc = fit_text_polygon(np.vstack([outer, inner]), split="half")
    assert arc.fit_error > 1.0 and arc.text_height == pytest.approx(40, rel=0.1)


@pytest.mark.parametrize("points, message", [
    ([[0, 0], [1, 0], [1, 1]], "at least 4 distinct points"),
    ([[0, 0], [1, 0], [1, 0], [1, 1], [0, 0]], "at least 4 distinct points"),
    ([[0, 0], [1, 1], [2, 2], [3, 3]], "encloses no area"),
])
def test_degenerate_polygons_are_refused(points, message):
    with pytest.raises(PolygonGeometryError, match=message):
        fit_text_polygon(points)
