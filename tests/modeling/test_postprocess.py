import pytest
import torch
from detectron2.config import get_cfg
from detectron2.structures import Boxes

from ests_d2.config import add_ests_config
from ests_d2.structures import CharVocabulary
from ests_d2.modeling.postprocess import ESTSPostProcess, result_to_instances
from tests.shared_paths import load_golden


def _outputs():
    """One image, 3 queries, 2 classes, T = 2 slots, V = 97."""
    logits = torch.tensor([[[0.0, 3.0], [-2.0, 1.0], [4.0, -1.0]]])
    boxes = torch.tensor([[[0.5, 0.5, 0.2, 0.4], [0.25, 0.75, 0.5, 0.5], [0.1, 0.1, 0.2, 0.2]]])
    beziers = torch.linspace(0, 1, 3 * 32).view(1, 3, 32)
    rec = torch.zeros(1, 3, 2, 97)
    rec[0, 0, 0, 33] = 5.0  # 'A'
    rec[0, 0, 1, 96] = 5.0  # padding
    rec[0, 1, :, 95] = 5.0  # unknown
    return {"pred_logits": logits, "pred_boxes": boxes, "pred_beziers": beziers, "pred_rec": rec}


def test_top_k_over_query_class_pairs_and_scaling():
    outputs = _outputs()
    result = ESTSPostProcess(num_select=4)(outputs, torch.tensor([[100, 200]]))[0]
    # sorted sigmoid scores of the 6 (query, class) pairs: (2,0)=4, (0,1)=3, (1,1)=1, (0,0)=0
    assert result["query_index"].tolist() == [2, 0, 1, 0]
    assert result["labels"].tolist() == [0, 1, 1, 0]
    assert torch.allclose(result["scores"], torch.tensor([4.0, 3.0, 1.0, 0.0]).sigmoid())
    # query 0: cxcywh (0.5, 0.5, 0.2, 0.4) -> xyxy (0.4, 0.3, 0.6, 0.7) * (w=200, h=100)
    assert torch.allclose(result["boxes"][1], torch.tensor([80.0, 30.0, 120.0, 70.0]))
    expected_polygon = outputs["pred_beziers"][0, 2] * torch.tensor([200.0, 100.0]).repeat(16)
    assert torch.allclose(result["beziers"][0], expected_polygon)
    assert result["rec"][1].tolist() == [33, 96]
    assert torch.allclose(result["rec_prob"][1, 0], outputs["pred_rec"][0, 0, 0].softmax(-1))
    assert torch.allclose(result["rec_score"], result["rec_prob"].max(-1).values)


def test_rejects_bad_sizes():
    with pytest.raises(ValueError, match="target_sizes"):
        ESTSPostProcess(num_select=2)(_outputs(), torch.tensor([100, 200]))
    with pytest.raises(ValueError, match="NUM_SELECT"):
        ESTSPostProcess(num_select=7)(_outputs(), torch.tensor([[100, 200]]))


def test_from_config():
    cfg = get_cfg()
    add_ests_config(cfg)
    cfg.MODEL.ESTS.NUM_SELECT = 50
    assert ESTSPostProcess(cfg).num_select == 50


def test_instances_follow_the_contract():
    result = ESTSPostProcess(num_select=3)(_outputs(), torch.tensor([[100, 200]]))[0]
    instances = result_to_instances(result, (100, 200), CharVocabulary.from_config(97))
    assert instances.image_size == (100, 200) and len(instances) == 3
    assert isinstance(instances.pred_boxes, Boxes)
    assert instances.polygons.shape == (3, 32) and instances.polygons.dtype == torch.float32
    assert instances.rec.dtype == torch.int64 and instances.rec_scores.shape == (3, 2)
    assert instances.rec_probs.shape == (3, 2, 97) and instances.pred_classes.dtype == torch.int64
    # query 2 argmax ' ' (id 0) twice; query 0 'A' then padding (skipped); query 1 unknown twice
    assert instances.texts == ["  ", "A", "\u53e3\u53e3"]


def test_matches_the_official_post_processing():
    outputs = load_golden("outputs.pth")
    post = load_golden("post.pth")
    results = ESTSPostProcess(num_select=100)(outputs, post["orig_sizes_hw"])
    assert len(post["results"]) > 0
    for image, (mine, ref) in enumerate(zip(results, post["results"], strict=True)):
        for key in ("query_index", "labels", "rec"):  # discrete decisions: identical
            assert torch.equal(mine[key], ref[key]), (image, key)
        for key in ("scores", "boxes", "beziers", "rec_score"):
            assert mine[key].dtype == ref[key].dtype
            # exp/log differ by an ulp between AVX2 and AVX-512 kernels (reference: AVX-512)
            torch.testing.assert_close(mine[key], ref[key], rtol=1e-6, atol=1e-7, msg=f"image {image} {key}")
        torch.testing.assert_close(mine["rec_prob"][:10], ref["rec_prob_first10"], rtol=1e-6, atol=1e-7)
