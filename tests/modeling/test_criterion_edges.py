"""Criterion behaviour the golden comparison cannot see: it runs with the default focal parameters, float32
heads, int64 GT ids and a valid DN layout. Found by mutation testing (docs/MUTATION.md)."""
import math

import pytest
import torch

from ests_d2.modeling.criterion import ESTSCriterion, build_weight_dict
from ests_d2.modeling.matcher import HungarianMatcher

WEIGHTS = dict(class_weight=1.0, bbox_weight=5.0, giou_weight=2.0, rec_weight=1.0, polygon_weight=1.0,
               num_decoder_layers=2, aux_loss=False, with_denoising=False, interm_weight=1.0)
ONE_MATCH = [(torch.tensor([0]), torch.tensor([0]))]


def _criterion(**kwargs):
    matcher = HungarianMatcher(cost_class=2.0, cost_bbox=5.0, cost_giou=2.0)
    return ESTSCriterion(matcher=matcher, weight_dict=build_weight_dict(**WEIGHTS), **kwargs).train()


def test_focal_loss_uses_the_configured_alpha_and_gamma():
    """One query, one class, matched (target 1); alpha 0.5, gamma 1: 0.5 * -log(p) * (1 - p)."""
    criterion = _criterion(focal_alpha=0.5, focal_gamma=1.0)
    loss = criterion.loss_labels({"pred_logits": torch.tensor([[[1.0]]])}, [{"labels": torch.tensor([0])}],
                                 ONE_MATCH, num_boxes=1.0, log=False)
    p = 1 / (1 + math.exp(-1.0))
    assert loss["loss_ce"].item() == pytest.approx(0.5 * -math.log(p) * (1 - p), rel=1e-6)


def test_losses_are_float32_when_the_heads_ran_in_bfloat16():
    criterion = _criterion(max_text_len=2)
    outputs = {
        "pred_logits": torch.tensor([[[1.0, -1.0]]], dtype=torch.bfloat16),
        "pred_boxes": torch.tensor([[[0.5, 0.5, 0.25, 0.25]]], dtype=torch.bfloat16),
        "pred_rec": torch.tensor([[[[2.0, 0.0], [0.0, 2.0]]]], dtype=torch.bfloat16),
        "pred_beziers": torch.zeros(1, 1, 32),
    }
    targets = [{"labels": torch.tensor([0]), "boxes": torch.tensor([[0.5, 0.5, 0.5, 0.5]]),
                "rec": torch.tensor([[0, 1]]), "bezier_pts": torch.zeros(1, 16)}]
    losses = criterion.output_set_losses(outputs, targets, ONE_MATCH, num_boxes=1.0, with_text=True, log=True)
    for name in ("loss_ce", "loss_bbox", "loss_giou", "loss_xy", "loss_hw", "loss_rec"):
        assert losses[name].dtype == torch.float32, name
    # |0.25 - 0.5| twice; GIoU of the centred 0.25 box inside the 0.5 box: 0.0625 / 0.25
    assert losses["loss_bbox"].item() == pytest.approx(0.5)
    assert losses["loss_hw"].item() == pytest.approx(0.5) and losses["loss_xy"].item() == 0.0
    assert losses["loss_giou"].item() == pytest.approx(0.75, rel=1e-5)  # GIoU adds an epsilon
    assert losses["loss_rec"].item() == pytest.approx(math.log(1 + math.exp(-2.0)), rel=1e-6)


def test_recognition_targets_may_be_int32():
    """The dataset JSON can hold rec ids as int32; cross-entropy needs int64 targets."""
    criterion = _criterion(max_text_len=2)
    outputs = {"pred_rec": torch.zeros(1, 1, 2, 3), "pred_beziers": torch.zeros(1, 1, 32)}
    targets = [{"rec": torch.tensor([[1, 2]], dtype=torch.int32), "bezier_pts": torch.zeros(1, 16)}]
    loss = criterion.loss_text(outputs, targets, ONE_MATCH, num_boxes=1.0)
    assert loss["loss_rec"].item() == pytest.approx(math.log(3))  # uniform logits over 3 classes


def test_batch_without_ground_truth_has_a_zero_recognition_loss_that_still_backpropagates():
    criterion = _criterion()
    pred_rec = torch.randn(1, 3, 25, 5, requires_grad=True)
    outputs = {"pred_rec": pred_rec, "pred_beziers": torch.rand(1, 3, 32)}
    targets = [{"rec": torch.zeros(0, 25, dtype=torch.int64), "bezier_pts": torch.zeros(0, 16)}]
    empty = [(torch.zeros(0, dtype=torch.int64), torch.zeros(0, dtype=torch.int64))]
    loss = criterion.loss_text(outputs, targets, empty, num_boxes=1.0)
    assert loss["loss_rec"].item() == 0.0 and loss["loss_beziers"].item() == 0.0
    loss["loss_rec"].backward()
    assert pred_rec.grad is not None and not pred_rec.grad.any()


def test_denoising_layout_must_split_into_the_groups():
    targets = [{"labels": torch.ones(2, dtype=torch.int64)}]
    with pytest.raises(ValueError, match=r"^dn_meta: pad_size 5 is not a multiple of num_dn_group 2$"):
        ESTSCriterion.denoising_indices(targets, {"pad_size": 5, "num_dn_group": 2})
    (slots, gts), = ESTSCriterion.denoising_indices(targets, {"pad_size": 12, "num_dn_group": 3})
    assert slots.tolist() == [0, 1, 4, 5, 8, 9] and gts.tolist() == [0, 1, 0, 1, 0, 1]
    assert slots.dtype == gts.dtype == torch.int64
