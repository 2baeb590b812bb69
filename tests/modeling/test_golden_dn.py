"""Training-mode parity with denoising queries (golden dn.pth): the two recorded DN forward passes.

``zero_noise``: no label or box noise, so our DN construction itself must give the recorded inputs.
``official_noise``: the recorded noised labels / boxes are injected instead of drawing noise.
"""
import pytest
import torch

from ests_d2.modeling.denoising import ContrastiveDenoising
from tests.modeling.golden_model import assert_close, golden_model
from tests.shared_paths import load_golden

FINAL_ATOL = 1e-4


@pytest.fixture(scope="module")
def golden_dn():
    inputs, dn = load_golden("inputs.pth"), load_golden("dn.pth")
    model, _ = golden_model()
    model.train()
    targets = [{k: v for k, v in t.items()} for t in inputs["targets"]]
    runs = {}
    for name in ("zero_noise", "official_noise"):
        recorded = dn[name]
        builder = ContrastiveDenoising(dn_number=dn["dn_number"], label_noise_ratio=recorded["label_noise_ratio"],
                                       box_noise_scale=recorded["box_noise_scale"], num_classes=2, num_queries=100)
        noise = None if name == "zero_noise" else (recorded["slot_label"], recorded["input_query_bbox_unsig"])
        queries = builder(targets, model.label_enc, recorded_noise=noise)
        with torch.no_grad():
            outputs = model.official_forward(inputs["images"], queries)
            losses = model.criterion(outputs, targets)
        runs[name] = {"queries": queries, "outputs": outputs, "losses": losses}
    return {"model": model, "dn": dn, "runs": runs}


@pytest.mark.parametrize("name", ["zero_noise", "official_noise"])
def test_denoising_forward_matches(golden_dn, name):
    ref, run = golden_dn["dn"][name], golden_dn["runs"][name]
    queries, out = run["queries"], run["outputs"]
    if name == "zero_noise":
        assert torch.equal(queries["slot_label"], ref["slot_label"])
        assert_close(queries["boxes_unsig"], ref["input_query_bbox_unsig"], "DN boxes", atol=1e-6)
    assert torch.equal(queries["attn_mask"], golden_dn["dn"]["attn_mask"])
    dn_out = out["dn_meta"]["output_known_lbs_bboxes"]
    assert_close(dn_out["pred_logits"], ref["dn_pred_logits"], "DN logits", atol=FINAL_ATOL)
    assert_close(dn_out["pred_boxes"], ref["dn_pred_boxes"], "DN boxes", atol=FINAL_ATOL)
    assert_close(dn_out["pred_beziers"], ref["dn_pred_beziers"], "DN polygons", atol=FINAL_ATOL)
    assert_close(dn_out["pred_rec"][:, :4], ref["dn_pred_rec_slots0_3"], "DN recognition", atol=FINAL_ATOL)
    assert_close(torch.stack([a["pred_logits"] for a in dn_out["aux_outputs"]]), ref["dn_aux_pred_logits"],
                 "DN aux logits", atol=FINAL_ATOL)
    assert_close(torch.stack([a["pred_boxes"] for a in dn_out["aux_outputs"]]), ref["dn_aux_pred_boxes"],
                 "DN aux boxes", atol=FINAL_ATOL)
    assert torch.equal(out["roi_levels"], ref["roi_pooler_level"])
    assert_close(out["pred_logits"], ref["matching_pred_logits"], "matching logits", atol=FINAL_ATOL)
    assert_close(out["pred_boxes"], ref["matching_pred_boxes"], "matching boxes", atol=FINAL_ATOL)


@pytest.mark.parametrize("name", ["zero_noise", "official_noise"])
def test_denoising_losses_match(golden_dn, name):
    ref, run = golden_dn["dn"][name], golden_dn["runs"][name]
    model = golden_dn["model"]
    weighted = model.criterion.weighted_losses(run["losses"])
    assert len(weighted) == ref["n_terms_in_total"]
    total = sum(float(v) for v in weighted.values())
    assert abs(total - ref["weighted_total"]) <= 1e-5 * abs(ref["weighted_total"]), (total, ref["weighted_total"])
    assert set(run["losses"]) == set(ref["losses"])
    for key, value in ref["losses"].items():
        assert abs(float(run["losses"][key]) - value) <= 1e-4 * max(1.0, abs(value)), (key, float(run["losses"][key]), value)
