import pytest
import torch
from detectron2.config import get_cfg
from torch import nn

from ests_d2.config import add_ests_config
from ests_d2.modeling.denoising import (ContrastiveDenoising, build_denoising, denoising_attention_mask,
                                        split_denoising_outputs)
from tests.shared_paths import load_golden


def _builder(ratio=0.5, scale=1.0, dn_number=100, num_queries=100):
    return ContrastiveDenoising(dn_number=dn_number, label_noise_ratio=ratio, box_noise_scale=scale, num_classes=2,
                                num_queries=num_queries)


def _targets(boxes_per_image):
    return [{"labels": torch.ones(len(b), dtype=torch.int64), "boxes": torch.tensor(b, dtype=torch.float32).view(-1, 4)}
            for b in boxes_per_image]


def test_attention_mask_layout_hand_written():
    """2 groups of single_pad 2 (g = 1), 2 matching queries; True = blocked."""
    x, o = True, False
    expected = torch.tensor([
        [o, o, x, x, o, o],
        [o, o, x, x, o, o],
        [x, x, o, o, o, o],
        [x, x, o, o, o, o],
        [x, x, x, x, o, o],
        [x, x, x, x, o, o],
    ])
    assert torch.equal(denoising_attention_mask(4, 2, 2), expected)
    assert not denoising_attention_mask(0, 1, 3).any()


def test_number_of_groups_follows_the_official_rule():
    builder = _builder()
    assert builder.num_groups(2) == 50  # 200 // 4
    assert builder.num_groups(3) == 33
    assert builder.num_groups(0) == 1
    assert builder.num_groups(150) == 1  # 200 // 300 = 0 -> 1
    assert _builder(dn_number=10).num_groups(3) == 20  # budgets below 100 are not divided


def test_layout_of_a_small_batch():
    targets = _targets([[[0.5, 0.5, 0.2, 0.2], [0.3, 0.3, 0.1, 0.1]], [[0.6, 0.6, 0.2, 0.2]]])
    queries = _builder(ratio=0.0, scale=0.0, dn_number=2, num_queries=3)(targets, nn.Embedding(3, 8))
    groups = 4  # budget 4 < 100: not divided by g
    assert queries["dn_meta"] == {"pad_size": 2 * 2 * groups, "num_dn_group": groups}
    assert queries["slot_gt_index"][0].tolist() == [0, 1] * 8
    assert queries["slot_gt_index"][1].tolist() == [0, -1] * 8
    assert queries["slot_is_positive"][0].tolist() == [True, True, False, False] * 4
    assert queries["content"].shape == (2, 16, 8)
    assert queries["attn_mask"].shape == (19, 19)
    assert (queries["content"][1, 1::2] == 0).all() and (queries["boxes_unsig"][1, 1::2] == 0).all()


def test_box_noise_magnitudes_of_positives_and_negatives():
    """Positives move each corner by < half the box size, negatives by 1x..2x.

    Negatives whose corners cross (negative width or height) hit the logit clamp and are left out.
    """
    torch.manual_seed(3)
    box = [0.5, 0.5, 0.2, 0.1]
    queries = _builder(ratio=0.0, scale=1.0)(_targets([[box]]), nn.Embedding(3, 4))
    cxcywh = queries["boxes_unsig"][0].sigmoid().double()
    corners = torch.cat([cxcywh[:, :2] - cxcywh[:, 2:] / 2, cxcywh[:, :2] + cxcywh[:, 2:] / 2], 1)
    gt = torch.tensor([0.4, 0.45, 0.6, 0.55], dtype=torch.float64)
    shift = (corners - gt).abs() / torch.tensor([0.1, 0.05, 0.1, 0.05], dtype=torch.float64)
    positive = queries["slot_is_positive"][0]
    assert (shift[positive] < 1 + 1e-4).all()
    negative = ~positive & (cxcywh[:, 2:] > 2e-3).all(1)
    assert negative.sum() > 10
    assert (shift[negative] > 1 - 1e-4).all() and (shift[negative] < 2 + 1e-4).all()
    assert (queries["slot_label"] == 1).all()


def test_label_flip_rate():
    torch.manual_seed(0)
    targets = _targets([[[0.5, 0.5, 0.2, 0.2]] * 50])
    queries = _builder(ratio=0.5, scale=0.0, dn_number=5000)(targets, nn.Embedding(3, 4))
    labels = queries["slot_label"][0]
    # flip with probability 0.25 to a uniform class in {0, 1}: label 0 in ~12.5% of the copies
    assert 0.10 < (labels == 0).float().mean().item() < 0.15
    assert set(labels.unique().tolist()) == {0, 1}


def test_build_from_config():
    cfg = get_cfg()
    add_ests_config(cfg)
    builder = build_denoising(cfg)
    assert (builder.dn_number, builder.label_noise_ratio, builder.box_noise_scale) == (100, 0.5, 1.0)
    cfg.MODEL.ESTS.DN.ENABLED = False
    assert build_denoising(cfg) is None


def test_no_ground_truth_gives_no_denoising_queries():
    targets = [{"labels": torch.zeros(0, dtype=torch.int64), "boxes": torch.zeros(0, 4)}]
    queries = _builder(num_queries=5)(targets, nn.Embedding(3, 4))
    assert queries["dn_meta"] == {"pad_size": 0, "num_dn_group": 1}
    assert queries["content"].shape == (1, 0, 4) and not queries["attn_mask"].any()


def test_split_denoising_outputs():
    layers = [{"pred_logits": torch.arange(7.0).view(1, 7, 1).expand(1, 7, 2)} for _ in range(3)]
    matching, meta = split_denoising_outputs(layers, {"pad_size": 4, "num_dn_group": 2})
    assert [m["pred_logits"].shape[1] for m in matching] == [3, 3, 3]
    dn = meta["output_known_lbs_bboxes"]
    assert dn["pred_logits"][0, :, 0].tolist() == [0, 1, 2, 3] and len(dn["aux_outputs"]) == 2
    same, meta = split_denoising_outputs(layers, {"pad_size": 0, "num_dn_group": 1})
    assert same is layers and "output_known_lbs_bboxes" not in meta


def test_structure_matches_the_official_code():
    dn = load_golden("dn.pth")
    targets = load_golden("inputs.pth")["targets"]
    queries = _builder(ratio=0.0, scale=0.0)(targets, nn.Embedding(3, 256))
    assert queries["dn_meta"] == {"pad_size": dn["pad_size"], "num_dn_group": dn["num_dn_group"]}
    assert dn["single_pad"] == dn["pad_size"] // dn["num_dn_group"]
    assert torch.equal(queries["attn_mask"], dn["attn_mask"])
    assert torch.equal(queries["slot_gt_index"], dn["slot_gt_index"])
    assert torch.equal(queries["slot_is_positive"], dn["slot_is_positive"])


@pytest.mark.parametrize("noise", ["zero_noise", "official_noise"])
def test_noised_queries_reproduce_the_official_passes(noise):
    """Same seed -> same label flips and box noise as the official run (global generator, official order)."""
    dn = load_golden("dn.pth")
    targets = load_golden("inputs.pth")["targets"]
    recorded = dn[noise]
    builder = _builder(ratio=recorded["label_noise_ratio"], scale=recorded["box_noise_scale"],
                       dn_number=dn["dn_number"], num_queries=dn["num_queries"])
    label_enc = nn.Embedding(3, 256)
    if recorded["torch_manual_seed_before_forward"] is not None:
        torch.manual_seed(recorded["torch_manual_seed_before_forward"])
    queries = builder(targets, label_enc)
    assert torch.equal(queries["slot_label"], recorded["slot_label"])
    # float32 log differs by an ulp between AVX2 and AVX-512 kernels (the reference used AVX-512)
    torch.testing.assert_close(queries["boxes_unsig"], recorded["input_query_bbox_unsig"], rtol=0, atol=1e-6)
    filled = recorded["slot_label"] >= 0
    assert torch.equal(queries["content"][filled], label_enc.weight[recorded["slot_label"][filled]])
    assert (queries["content"][~filled] == 0).all()


def test_recorded_noise_is_injected_as_given():
    dn = load_golden("dn.pth")
    targets = load_golden("inputs.pth")["targets"]
    recorded = dn["official_noise"]
    label_enc = nn.Embedding(3, 256)
    state = torch.get_rng_state()
    noise = (recorded["slot_label"], recorded["input_query_bbox_unsig"])
    queries = _builder()(targets, label_enc, recorded_noise=noise)
    assert torch.equal(torch.get_rng_state(), state)  # nothing drawn
    assert torch.equal(queries["boxes_unsig"], recorded["input_query_bbox_unsig"])
    assert torch.equal(queries["slot_label"], recorded["slot_label"])
    filled = recorded["slot_label"] >= 0
    assert torch.equal(queries["content"][filled], label_enc.weight[recorded["slot_label"][filled]])
    with pytest.raises(ValueError, match="recorded DN noise"):
        _builder()(targets[:1], label_enc, recorded_noise=noise)
