"""The recorded official training pass with denoising queries (golden ``dn.pth``, official noise).

The full TT fine-tune network with the recipe weights runs one train-mode forward on the two golden
images with the recorded noised DN labels / boxes injected; its DN outputs, RoI pooler levels, matching
outputs and all 103 criterion terms (63 weighted, and their total) must match the official pass.
One forward of the full model with 300 instances takes about a minute on 2 CPU cores.
"""
import pytest
import torch
from detectron2.modeling import build_model

import ests_d2.modeling  # noqa: F401  (registers the meta-architecture)
from ests_d2.modeling.denoising import ContrastiveDenoising
from ests_d2.modeling.official_checkpoint import convert_official_state_dict
from tests.modeling.golden_weights import official_recipe_state_dict
from tests.modeling.model_config import ests_cfg
from tests.shared_paths import load_golden, require_shared

# README tolerance for a faithful float32 CPU re-implementation (official-vs-official drift is ~1e-5)
TOLERANCE = dict(rtol=1e-5, atol=2e-4)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def official_noise_pass():
    tsv = require_shared("docs/state_dict_tt_finetune.tsv")
    inputs = load_golden("inputs.pth")
    dn = load_golden("dn.pth")
    recorded = dn["official_noise"]
    model = build_model(ests_cfg(num_levels=5))
    weights, _ = convert_official_state_dict(official_recipe_state_dict(tsv))
    model.load_state_dict(weights, strict=True)
    model.train()
    builder = ContrastiveDenoising(dn_number=dn["dn_number"], label_noise_ratio=recorded["label_noise_ratio"],
                                   box_noise_scale=recorded["box_noise_scale"], num_classes=2,
                                   num_queries=dn["num_queries"])
    with torch.no_grad():
        queries = builder(inputs["targets"], model.label_enc,
                          recorded_noise=(recorded["slot_label"], recorded["input_query_bbox_unsig"]))
        outputs = model.official_forward(inputs["images"], queries)
        losses = model.criterion(outputs, inputs["targets"])
    return {"outputs": outputs, "losses": losses, "weighted": model.criterion.weighted_losses(losses),
            "recorded": recorded, "queries": queries, "dn": dn}


def test_denoising_outputs_match(official_noise_pass):
    recorded = official_noise_pass["recorded"]
    outputs = official_noise_pass["outputs"]
    assert torch.equal(official_noise_pass["queries"]["attn_mask"], official_noise_pass["dn"]["attn_mask"])
    dn_part = outputs["dn_meta"]["output_known_lbs_bboxes"]
    for key in ("pred_logits", "pred_boxes", "pred_beziers"):
        torch.testing.assert_close(dn_part[key], recorded[f"dn_{key}"], **TOLERANCE, msg=key)
    torch.testing.assert_close(dn_part["pred_rec"][:, :4], recorded["dn_pred_rec_slots0_3"], **TOLERANCE)
    for layer, aux in enumerate(dn_part["aux_outputs"]):
        torch.testing.assert_close(aux["pred_logits"], recorded["dn_aux_pred_logits"][layer], **TOLERANCE)
        torch.testing.assert_close(aux["pred_boxes"], recorded["dn_aux_pred_boxes"][layer], **TOLERANCE)
    assert torch.equal(outputs["roi_levels"], recorded["roi_pooler_level"])
    torch.testing.assert_close(outputs["pred_logits"], recorded["matching_pred_logits"], **TOLERANCE)
    torch.testing.assert_close(outputs["pred_boxes"], recorded["matching_pred_boxes"], **TOLERANCE)


def test_all_loss_terms_and_the_total_match(official_noise_pass):
    recorded = official_noise_pass["recorded"]
    losses, weighted = official_noise_pass["losses"], official_noise_pass["weighted"]
    assert set(losses) == set(recorded["losses"])
    for name, value in recorded["losses"].items():
        assert float(losses[name]) == pytest.approx(value, rel=1e-5, abs=1e-6), name
        assert str(losses[name].dtype) == f"torch.{recorded['loss_dtypes'][name]}", name
    assert len(weighted) == recorded["n_terms_in_total"] == 63
    assert float(sum(weighted.values())) == pytest.approx(recorded["weighted_total"], rel=1e-6)
