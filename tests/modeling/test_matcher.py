import itertools
import json
import math

import pytest
import torch
from detectron2.config import get_cfg

from ests_d2.config import add_ests_config
from ests_d2.modeling.matcher import HungarianMatcher, generalized_box_iou
from tests.shared_paths import load_golden, require_golden_file


def _target(labels, boxes):
    return {"labels": torch.tensor(labels, dtype=torch.int64), "boxes": torch.tensor(boxes, dtype=torch.float32)}


def test_generalized_box_iou_hand_computed():
    a = torch.tensor([[0.0, 0.0, 2.0, 2.0]])
    b = torch.tensor([[1.0, 1.0, 3.0, 3.0], [0.0, 0.0, 2.0, 2.0], [3.0, 0.0, 4.0, 1.0]])
    giou = generalized_box_iou(a, b)[0]
    # overlap 1, union 7, hull 9 -> 1/7 - 2/9; identical -> 1; disjoint: union 5, hull 8 -> -3/8
    expected = torch.tensor([1 / 7 - 2 / 9, 1.0, -3 / 8])
    assert torch.allclose(giou, expected, atol=1e-6)


def test_generalized_box_iou_rejects_inverted_boxes():
    with pytest.raises(ValueError, match="x1 >= x0"):
        generalized_box_iou(torch.tensor([[1.0, 0.0, 0.0, 1.0]]), torch.tensor([[0.0, 0.0, 1.0, 1.0]]))


def test_class_cost_is_the_focal_difference():
    """One query with p = sigmoid(0) = 0.5 for the target class, L1/GIoU switched off."""
    matcher = HungarianMatcher(cost_class=1.0, cost_bbox=0.0, cost_giou=0.0)
    outputs = {"pred_logits": torch.zeros(1, 1, 2), "pred_boxes": torch.tensor([[[0.5, 0.5, 0.2, 0.2]]])}
    cost = matcher.cost_matrices(outputs, [_target([1], [[0.5, 0.5, 0.2, 0.2]])])[0]
    log_half = -math.log(0.5 + 1e-8)
    expected = 0.25 * 0.25 * log_half - 0.75 * 0.25 * log_half
    assert cost.shape == (1, 1)
    assert cost.item() == pytest.approx(expected, rel=1e-6)


def test_matcher_finds_the_optimal_assignment_of_a_small_cost_matrix():
    """L1 cost only: the assignment must be the brute-force optimum over all injective maps."""
    matcher = HungarianMatcher(cost_class=0.0, cost_bbox=1.0, cost_giou=0.0)
    pred = torch.tensor([[[0.1, 0.1, 0.1, 0.1], [0.5, 0.5, 0.2, 0.2], [0.9, 0.9, 0.1, 0.1], [0.45, 0.5, 0.2, 0.2]]])
    gts = [[0.5, 0.52, 0.2, 0.2], [0.85, 0.9, 0.1, 0.1], [0.4, 0.5, 0.2, 0.2]]
    outputs = {"pred_logits": torch.zeros(1, 4, 2), "pred_boxes": pred}
    targets = [_target([1, 1, 1], gts)]
    cost = matcher.cost_matrices(outputs, targets)[0]
    assert torch.allclose(cost, torch.cdist(pred[0], torch.tensor(gts), p=1))
    rows, cols = matcher(outputs, targets)[0]
    best = min(itertools.permutations(range(4), 3), key=lambda qs: sum(cost[q, j] for j, q in enumerate(qs)))
    assert sorted(zip(cols.tolist(), rows.tolist())) == list(enumerate(best))
    assert rows.tolist() == sorted(rows.tolist())
    # hand check: GT 0 -> query 1, GT 1 -> query 2, GT 2 -> query 3
    assert dict(zip(cols.tolist(), rows.tolist())) == {0: 1, 1: 2, 2: 3}


def test_matcher_handles_images_without_targets():
    matcher = HungarianMatcher(cost_class=2.0, cost_bbox=5.0, cost_giou=2.0)
    outputs = {"pred_logits": torch.randn(2, 5, 2), "pred_boxes": torch.rand(2, 5, 4) * 0.5 + 0.2}
    targets = [_target([], []).copy(), _target([1], [[0.5, 0.5, 0.3, 0.3]])]
    targets[0]["boxes"] = torch.zeros(0, 4)
    (r0, c0), (r1, c1) = matcher(outputs, targets)
    assert len(r0) == len(c0) == 0
    assert len(r1) == len(c1) == 1 and c1.item() == 0


def test_from_config_reads_the_matcher_keys():
    cfg = get_cfg()
    add_ests_config(cfg)
    cfg.MODEL.ESTS.MATCHER.COST_BBOX = 3.0
    matcher = HungarianMatcher(cfg)
    assert (matcher.cost_class, matcher.cost_bbox, matcher.cost_giou) == (2.0, 3.0, 2.0)
    assert matcher.focal_alpha == 0.25


def _golden_output_sets(outputs):
    sets = {"last": outputs, "interm": outputs["interm_outputs"]}
    sets.update({f"aux_{i}": aux for i, aux in enumerate(outputs["aux_outputs"])})
    return sets


def test_costs_and_assignments_match_the_official_code():
    outputs = load_golden("outputs.pth")
    targets = load_golden("inputs.pth")["targets"]
    ref_costs = load_golden("matching_costs.pth")["cost_matrices"]
    with open(require_golden_file("losses.json")) as f:
        ref_matching = json.load(f)["matching"]
    matcher = HungarianMatcher(cost_class=2.0, cost_bbox=5.0, cost_giou=2.0)
    sets = _golden_output_sets(outputs)
    assert set(sets) == set(ref_costs) == set(ref_matching)
    for name, out in sets.items():
        costs = matcher.cost_matrices(out, targets)
        indices = matcher(out, targets)
        for image, (cost, ref, (rows, cols)) in enumerate(zip(costs, ref_costs[name], indices)):
            # float32 rounding of AVX2 vs AVX-512 kernels: at most a few ulp of values ~10
            torch.testing.assert_close(cost.double(), ref, rtol=0, atol=1e-5, msg=f"{name} image {image}")
            ref_pairs = ref_matching[name][image]
            assert rows.tolist() == ref_pairs["query_index"], (name, image)
            assert cols.tolist() == ref_pairs["gt_index"], (name, image)
            assert cost[rows, cols].tolist() == pytest.approx(ref_pairs["cost"], abs=1e-5)


def test_half_precision_outputs_are_matched_in_float32():
    """Confident float16 logits would give log(0) = -inf costs without the float32 cast."""
    matcher = HungarianMatcher(cost_class=2.0, cost_bbox=5.0, cost_giou=2.0)
    logits = torch.tensor([[[-20.0, 20.0], [-20.0, -20.0], [20.0, 20.0]]])
    boxes = torch.tensor([[[0.5, 0.5, 0.2, 0.2], [0.3, 0.3, 0.2, 0.2], [0.7, 0.7, 0.2, 0.2]]])
    targets = [_target([1, 1], [[0.5, 0.5, 0.2, 0.2], [0.7, 0.7, 0.2, 0.2]])]
    half = {"pred_logits": logits.half(), "pred_boxes": boxes.half()}
    cost = matcher.cost_matrices(half, targets)[0]
    assert cost.dtype == torch.float32 and torch.isfinite(cost).all()
    full = matcher({"pred_logits": logits, "pred_boxes": boxes}, targets)
    assert [t.tolist() for t in matcher(half, targets)[0]] == [t.tolist() for t in full[0]] == [[0, 2], [0, 1]]


def test_giou_accepts_zero_area_boxes_and_names_inverted_ones():
    # a sigmoid-predicted box can collapse to zero width or height: still a box (the +1e-6 keeps GIoU finite)
    flat = torch.tensor([[0.2, 0.3, 0.2, 0.5], [0.1, 0.4, 0.6, 0.4]])
    normal = torch.tensor([[0.1, 0.1, 0.5, 0.5]])
    for boxes1, boxes2 in ((flat, normal), (normal, flat)):
        giou = generalized_box_iou(boxes1, boxes2)
        assert giou.shape == (len(boxes1), len(boxes2)) and torch.isfinite(giou).all()
    inverted = torch.tensor([[0.5, 0.1, 0.1, 0.5]])
    for boxes1, boxes2 in ((inverted, normal), (normal, inverted)):
        with pytest.raises(ValueError, match=r"^generalized_box_iou needs boxes with x1 >= x0 and y1 >= y0$"):
            generalized_box_iou(boxes1, boxes2)
