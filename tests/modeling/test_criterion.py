import json
import math

import pytest
import torch
from detectron2.config import get_cfg

from ests_d2.config import add_ests_config
from ests_d2.structures import bezier_to_polygon
from ests_d2.modeling.criterion import ESTSCriterion, build_weight_dict, official_polygon_targets
from ests_d2.modeling.matcher import HungarianMatcher
from tests.shared_paths import load_golden, require_golden_file

OFFICIAL_WEIGHTS = dict(class_weight=1.0, bbox_weight=5.0, giou_weight=2.0, rec_weight=1.0, polygon_weight=1.0,
                        num_decoder_layers=6, aux_loss=True, with_denoising=True, interm_weight=1.0)


def _criterion():
    matcher = HungarianMatcher(cost_class=2.0, cost_bbox=5.0, cost_giou=2.0)
    return ESTSCriterion(matcher=matcher, weight_dict=build_weight_dict(**OFFICIAL_WEIGHTS)).train()


def _assert_term(name, mine, ref_value, rtol=1e-5, atol=1e-6):
    assert abs(float(mine) - ref_value) <= atol + rtol * abs(ref_value), f"{name}: {float(mine)} vs {ref_value}"


def test_focal_loss_hand_computed():
    """Two queries x two classes, one matched to class 1; num_boxes = 1."""
    criterion = _criterion()
    logits = torch.tensor([[[0.0, 2.0], [-1.0, 0.5]]])
    outputs = {"pred_logits": logits}
    targets = [{"labels": torch.tensor([1])}]
    indices = [(torch.tensor([0]), torch.tensor([0]))]
    loss = criterion.loss_labels(outputs, targets, indices, num_boxes=1.0, log=True)

    def focal(x, t):
        p = 1 / (1 + math.exp(-x))
        ce = -math.log(p) if t else -math.log(1 - p)
        p_t = p if t else 1 - p
        return (0.25 if t else 0.75) * ce * (1 - p_t) ** 2

    expected = focal(0.0, 0) + focal(2.0, 1) + focal(-1.0, 0) + focal(0.5, 0)
    assert loss["loss_ce"].item() == pytest.approx(expected, rel=1e-6)
    assert loss["class_error"].item() == 0.0  # argmax of query 0 is class 1


def test_recognition_loss_is_the_mean_over_all_slots_including_padding():
    criterion = _criterion()
    criterion.max_text_len = 3
    rec_logits = torch.tensor([[[2.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 0.0]]])[None]  # (1, 1, T=3, V=3)
    outputs = {"pred_rec": rec_logits, "pred_beziers": torch.full((1, 1, 32), 0.5)}
    beziers = torch.tensor([[0.1, 0.2, 0.3, 0.2, 0.6, 0.2, 0.9, 0.2, 0.9, 0.4, 0.6, 0.4, 0.3, 0.4, 0.1, 0.4]])
    targets = [{"rec": torch.tensor([[0, 1, 2, 2]]), "bezier_pts": beziers}]  # truncated to T = 3; 2 = pad here
    loss = criterion.loss_text(outputs, targets, [(torch.tensor([0]), torch.tensor([0]))], num_boxes=2.0)
    slot_ce = [-math.log(math.exp(2) / (math.exp(2) + 2)), -math.log(math.e / (math.e + 2)), math.log(3)]
    assert loss["loss_rec"].item() == pytest.approx(sum(slot_ce) / 3, rel=1e-6)
    polygon = official_polygon_targets(beziers)
    assert loss["loss_beziers"].dtype == torch.float64
    assert loss["loss_beziers"].item() == pytest.approx((polygon - 0.5).abs().sum().item() / 2.0, rel=1e-12)


def test_polygon_targets_follow_the_bezier_layout():
    """Straight top / bottom edges: 8 evenly spaced points per curve, end points included."""
    beziers = torch.tensor([[0.0, 0.0, 1.0, 0.0, 2.0, 0.0, 3.0, 0.0, 3.0, 1.0, 2.0, 1.0, 1.0, 1.0, 0.0, 1.0]])
    points = official_polygon_targets(beziers).view(16, 2)
    u = torch.arange(8, dtype=torch.float64) * 3 / 7
    torch.testing.assert_close(points[:8], torch.stack([u, torch.zeros(8, dtype=torch.float64)], 1))
    torch.testing.assert_close(points[8:], torch.stack([3 - u, torch.ones(8, dtype=torch.float64)], 1))
    # the shared sampler agrees up to the last bit
    torch.testing.assert_close(bezier_to_polygon(beziers.double()), official_polygon_targets(beziers), rtol=0,
                               atol=1e-12)


def test_polygon_targets_are_bit_exact():
    inputs = load_golden("inputs.pth")
    for target, ref in zip(inputs["targets"], inputs["target_polygons"]):
        assert torch.equal(official_polygon_targets(target["bezier_pts"]), ref)


def test_weight_dict_layout():
    weights = build_weight_dict(**OFFICIAL_WEIGHTS)
    assert len(weights) == 63
    assert weights["loss_bbox_dn_3"] == 5.0 and weights["loss_giou_interm"] == 2.0
    no_dn = build_weight_dict(**{**OFFICIAL_WEIGHTS, "with_denoising": False, "aux_loss": False})
    assert set(no_dn) == {"loss_ce", "loss_bbox", "loss_giou", "loss_rec", "loss_beziers", "loss_ce_interm",
                          "loss_bbox_interm", "loss_giou_interm"}


def test_from_config():
    cfg = get_cfg()
    add_ests_config(cfg)
    cfg.MODEL.ESTS.LOSS.INTERM_WEIGHT = 0.5
    criterion = ESTSCriterion(cfg)
    assert len(criterion.weight_dict) == 63
    assert criterion.weight_dict["loss_bbox_interm"] == 2.5
    assert criterion.matcher.cost_bbox == 5.0


def test_batch_without_ground_truth_gives_finite_losses():
    criterion = _criterion()
    outputs = {"pred_logits": torch.randn(1, 4, 2), "pred_boxes": torch.rand(1, 4, 4) * 0.5 + 0.2,
               "pred_beziers": torch.rand(1, 4, 32), "pred_rec": torch.randn(1, 4, 25, 97, requires_grad=True)}
    targets = [{"labels": torch.zeros(0, dtype=torch.int64), "boxes": torch.zeros(0, 4),
                "bezier_pts": torch.zeros(0, 16), "rec": torch.zeros(0, 25, dtype=torch.int32)}]
    losses = criterion(outputs, targets)
    assert all(torch.isfinite(v).all() for v in losses.values())
    sum(criterion.weighted_losses(losses).values()).backward()


def test_all_terms_match_the_official_criterion():
    """Criterion on the golden eval-mode outputs (no DN): every term, the key set, the weighted total."""
    outputs = load_golden("outputs.pth")
    targets = load_golden("inputs.pth")["targets"]
    with open(require_golden_file("losses.json")) as f:
        ref = json.load(f)
    criterion = _criterion()
    losses, matched = criterion({**outputs, "dn_meta": None}, targets, return_indices=True)
    assert set(losses) == set(ref["losses"])
    for name, term in ref["losses"].items():
        _assert_term(name, losses[name], term["value"])
        assert str(losses[name].dtype) == f"torch.{term['dtype']}", name
    for name, per_image in ref["matching"].items():
        assert [m[0].tolist() for m in matched[name]] == [m["query_index"] for m in per_image]
    weighted = criterion.weighted_losses(losses)
    assert len(weighted) == ref["n_terms_in_total"]
    assert set(criterion.weight_dict) == set(ref["weight_dict"]) - {"loss_rec_interm", "loss_beziers_interm"}
    _assert_term("total", sum(weighted.values()), ref["weighted_total"])


@pytest.mark.parametrize("noise", ["zero_noise", "official_noise"])
def test_denoising_terms_match_the_official_criterion(noise):
    """DN terms of the recorded train-mode passes, from the DN outputs stored in dn.pth.

    dn.pth stores the DN logits / boxes of every layer and the DN polygons of the last layer (recognition
    logits only for 4 slots), so every DN term but ``loss_rec_dn*`` and ``loss_beziers_dn_0..4`` is checked.
    """
    dn = load_golden("dn.pth")
    targets = load_golden("inputs.pth")["targets"]
    recorded = dn[noise]
    ref = recorded["losses"]
    criterion = _criterion()
    dn_meta = {"pad_size": dn["pad_size"], "num_dn_group": dn["num_dn_group"]}
    indices = criterion.denoising_indices(targets, dn_meta)
    for image, (slots, gts) in enumerate(indices):
        assert torch.equal(slots, dn["criterion_dn_pos_idx"][image]["output_idx"])
        assert torch.equal(gts, dn["criterion_dn_pos_idx"][image]["tgt_idx"])

    num_boxes = 3.0 * dn["num_dn_group"]
    layers = [{"pred_logits": recorded["dn_aux_pred_logits"][i], "pred_boxes": recorded["dn_aux_pred_boxes"][i]}
              for i in range(5)]
    layers.append({"pred_logits": recorded["dn_pred_logits"], "pred_boxes": recorded["dn_pred_boxes"]})
    for layer, out in enumerate(layers):
        suffix = "_dn" if layer == 5 else f"_dn_{layer}"
        terms = criterion.output_set_losses(out, targets, indices, num_boxes, with_text=False, log=False)
        for key in ("loss_ce", "loss_bbox", "loss_giou", "loss_xy", "loss_hw", "cardinality_error"):
            _assert_term(key + suffix, terms[key], ref[key + suffix])

    last = {"pred_beziers": recorded["dn_pred_beziers"], "pred_rec": torch.zeros(2, dn["pad_size"], 25, 97)}
    text = criterion.loss_text(last, targets, indices, num_boxes)
    _assert_term("loss_beziers_dn", text["loss_beziers"], ref["loss_beziers_dn"])

    matching = {"pred_logits": recorded["matching_pred_logits"], "pred_boxes": recorded["matching_pred_boxes"]}
    terms = criterion.output_set_losses(matching, targets, criterion.matcher(matching, targets), 3.0, False, log=True)
    for key in ("loss_ce", "loss_bbox", "loss_giou", "class_error", "cardinality_error"):
        _assert_term(key, terms[key], ref[key])


def test_forward_with_denoising_outputs_reports_all_terms():
    """A full DN forward pass: 103 terms, the 63 weighted ones; DN ce uses every DN query."""
    torch.manual_seed(0)
    batch, nq, pad = 2, 6, 8
    targets = [{"labels": torch.ones(2, dtype=torch.int64), "boxes": torch.tensor([[0.3, 0.3, 0.2, 0.1],
                                                                                  [0.6, 0.7, 0.3, 0.2]]),
                "bezier_pts": torch.rand(2, 16), "rec": torch.randint(0, 97, (2, 25))},
               {"labels": torch.ones(1, dtype=torch.int64), "boxes": torch.tensor([[0.5, 0.5, 0.4, 0.4]]),
                "bezier_pts": torch.rand(1, 16), "rec": torch.randint(0, 97, (1, 25))}]

    def layer(n):
        return {"pred_logits": torch.randn(batch, n, 2), "pred_boxes": torch.rand(batch, n, 4) * 0.5 + 0.2,
                "pred_beziers": torch.rand(batch, n, 32), "pred_rec": torch.randn(batch, n, 25, 97)}

    outputs = {**layer(nq), "aux_outputs": [layer(nq) for _ in range(5)],
               "interm_outputs": {k: v for k, v in layer(nq).items() if k in ("pred_logits", "pred_boxes")},
               "dn_meta": {"pad_size": pad, "num_dn_group": 2,
                           "output_known_lbs_bboxes": {**layer(pad), "aux_outputs": [layer(pad) for _ in range(5)]}}}
    criterion = _criterion()
    losses = criterion(outputs, targets)
    assert len(losses) == 103
    assert len(criterion.weighted_losses(losses)) == 63
    dn_part = outputs["dn_meta"]["output_known_lbs_bboxes"]
    onehot = torch.zeros(batch, pad, 2)
    onehot[0, [0, 1, 4, 5], 1] = 1  # positives: block 0 and block 2 (single_pad = 4)
    onehot[1, [0, 4], 1] = 1
    p = dn_part["pred_logits"].sigmoid()
    ce = torch.nn.functional.binary_cross_entropy_with_logits(dn_part["pred_logits"], onehot, reduction="none")
    p_t = p * onehot + (1 - p) * (1 - onehot)
    focal = (0.25 * onehot + 0.75 * (1 - onehot)) * ce * (1 - p_t) ** 2
    assert losses["loss_ce_dn"].item() == pytest.approx(focal.sum().item() / (3 * 2), rel=1e-5)
    # in eval mode the DN part is ignored (placeholders)
    assert criterion.eval()(outputs, targets)["loss_ce_dn"].item() == 0.0


def test_aux_terms_can_be_switched_off():
    outputs = load_golden("outputs.pth")
    targets = load_golden("inputs.pth")["targets"]
    cfg = get_cfg()
    add_ests_config(cfg)
    cfg.MODEL.ESTS.LOSS.AUX = False
    criterion = ESTSCriterion(cfg).train()
    losses = criterion({**outputs, "dn_meta": None}, targets)
    assert not any(k.endswith(f"_{i}") for k in losses for i in range(5))
    # without DN outputs only the zero ce/bbox/giou DN placeholders are reported
    assert set(criterion.weighted_losses(losses)) == set(criterion.weight_dict) - {"loss_rec_dn", "loss_beziers_dn"}
    assert len(criterion.weight_dict) == 13


def test_num_boxes_is_the_mean_over_workers(monkeypatch):
    """With 2 workers holding 3 and 5 GTs, every worker normalises by 4 (all-reduce sum / world size)."""
    from detectron2.utils import comm

    def all_reduce(tensor):
        tensor += 5.0  # the other worker's count

    monkeypatch.setattr(comm, "get_world_size", lambda: 2)
    monkeypatch.setattr(torch.distributed, "all_reduce", all_reduce)
    targets = [{"labels": torch.ones(2, dtype=torch.int64)}, {"labels": torch.ones(1, dtype=torch.int64)}]
    assert _criterion()._num_boxes(targets, torch.device("cpu")) == 4.0
    monkeypatch.setattr(comm, "get_world_size", lambda: 1)
    assert _criterion()._num_boxes([{"labels": torch.zeros(0)}], torch.device("cpu")) == 1.0  # clamped
