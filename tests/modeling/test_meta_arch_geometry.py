"""Where the detectron2 side meets the official model: coordinates, on images that are not square.

Expected values are worked out by hand from the official conventions (targets: cxcywh and Bezier points
divided by the unpadded image width for x and height for y; predictions: normalised by the unpadded input,
scaled by the ORIGINAL image width / height). Every image here has height != width and an original size
that differs from the input size, so that a swapped axis or the wrong size changes the numbers.
"""
import pytest
import torch
from detectron2.modeling import build_model
from detectron2.structures import Boxes, Instances

import ests_d2.modeling  # noqa: F401  (registers the meta-architecture)
from tests.modeling.model_config import tiny_ests_cfg


@pytest.fixture(scope="module")
def tiny_model():
    torch.manual_seed(0)
    return build_model(tiny_ests_cfg())


def _instances(image_size, boxes, beziers, classes, rec):
    instances = Instances(image_size)
    instances.gt_boxes = Boxes(torch.tensor(boxes, dtype=torch.float32))
    instances.gt_beziers = torch.tensor(beziers, dtype=torch.float32)
    instances.gt_classes = torch.tensor(classes, dtype=torch.int64)
    instances.gt_rec = torch.tensor(rec, dtype=torch.int64)
    return instances


# An image 80 high and 200 wide: one word box x 20..60, y 8..40; its Bezier points (x, y) alternate.
TALL_WORD_BOX = [20.0, 8.0, 60.0, 40.0]
TALL_WORD_BEZIER = [20.0, 8.0, 30.0, 8.0, 50.0, 8.0, 60.0, 8.0, 60.0, 40.0, 50.0, 40.0, 30.0, 40.0, 20.0, 40.0]


def test_official_targets_divide_x_by_width_and_y_by_height(tiny_model):
    instances = _instances((80, 200), [TALL_WORD_BOX], [TALL_WORD_BEZIER], [0], [[5, 6, 96]])
    (target,) = tiny_model.official_targets([instances], [(80, 200)])
    # centre (40, 24), size 40 x 32 -> (40/200, 24/80, 40/200, 32/80)
    assert torch.allclose(target["boxes"], torch.tensor([[0.2, 0.3, 0.2, 0.4]]), atol=1e-7)
    # (x / 200, y / 80) for each of the 8 control points
    expected_points = [0.1, 0.1, 0.15, 0.1, 0.25, 0.1, 0.3, 0.1, 0.3, 0.5, 0.25, 0.5, 0.15, 0.5, 0.1, 0.5]
    assert torch.allclose(target["bezier_pts"], torch.tensor([expected_points]), atol=1e-7)
    assert target["labels"].tolist() == [1]  # the official head trains class 1 for text
    assert target["rec"].tolist() == [[5, 6, 96]]


def test_training_targets_use_each_image_unpadded_size(tiny_model, monkeypatch):
    # Two images of different sizes are padded to 96 x 200: the small one must still be normalised by its
    # own 64 x 120, not by the padded batch size nor by the other image's size.
    seen = {}

    def recording_denoising(targets, label_enc):  # the first consumer of the targets
        seen["targets"] = targets
        raise _Stop

    monkeypatch.setattr(tiny_model.denoising, "forward", recording_denoising)
    big = _instances((96, 200), [[0.0, 0.0, 100.0, 48.0]], [[0.0] * 16], [0], [[1]])
    small = _instances((64, 120), [[30.0, 16.0, 90.0, 48.0]], [[12.0, 32.0] * 8], [0], [[2]])
    batch = [{"image": torch.zeros(3, 96, 200, dtype=torch.uint8), "instances": big},
             {"image": torch.zeros(3, 64, 120, dtype=torch.uint8), "instances": small}]
    with pytest.raises(_Stop):
        tiny_model.train()(batch)
    big_target, small_target = seen["targets"]
    assert torch.allclose(big_target["boxes"], torch.tensor([[0.25, 0.25, 0.5, 0.5]]), atol=1e-7)
    # centre (60, 32), size 60 x 32 -> (60/120, 32/64, 60/120, 32/64)
    assert torch.allclose(small_target["boxes"], torch.tensor([[0.5, 0.5, 0.5, 0.5]]), atol=1e-7)
    assert torch.allclose(small_target["bezier_pts"], torch.tensor([[0.1, 0.5] * 8]), atol=1e-7)


class _Stop(Exception):
    """Ends a training forward once the targets were seen (no need to run the losses)."""


def _fixed_outputs(num_queries, voc_size, max_len, boxes, polygons):
    """Official network outputs whose first query has the highest score and the given geometry."""
    batch = len(boxes)
    logits = torch.full((batch, num_queries, 1), -5.0)
    logits[:, 0, 0] = 5.0
    pred_boxes = torch.full((batch, num_queries, 4), 0.5)
    pred_boxes[:, 0] = torch.tensor(boxes)
    pred_beziers = torch.full((batch, num_queries, 32), 0.5)
    pred_beziers[:, 0] = torch.tensor(polygons)
    rec = torch.zeros(batch, num_queries, max_len, voc_size)
    return {"pred_logits": logits, "pred_boxes": pred_boxes, "pred_beziers": pred_beziers, "pred_rec": rec}


def test_inference_scales_predictions_to_the_original_image_size(tiny_model, monkeypatch):
    # The network sees 64 x 120 and 48 x 96 inputs resized from 720 x 1280 and 300 x 400 originals;
    # a third input has no original size and is reported at its input size 40 x 60.
    polygon = [0.25, 0.5, 0.75, 0.125] + [0.5] * 28  # first two points (x, y)
    outputs = _fixed_outputs(20, 97, 25, [[0.5, 0.25, 0.2, 0.1]] * 3, [polygon] * 3)
    monkeypatch.setattr(tiny_model, "network", lambda images, mask, dn_queries=None: outputs)
    inputs = [
        {"image": torch.zeros(3, 64, 120, dtype=torch.uint8), "height": 720, "width": 1280},
        {"image": torch.zeros(3, 48, 96, dtype=torch.uint8), "height": 300, "width": 400},
        {"image": torch.zeros(3, 40, 60, dtype=torch.uint8)},
    ]
    with torch.no_grad():
        results = [r["instances"] for r in tiny_model.eval()(inputs)]
    expected = [  # (height, width), box xyxy, first two polygon points of the top detection
        ((720, 1280), [512.0, 144.0, 768.0, 216.0], [320.0, 360.0, 960.0, 90.0]),
        ((300, 400), [160.0, 60.0, 240.0, 90.0], [100.0, 150.0, 300.0, 37.5]),
        ((40, 60), [24.0, 8.0, 36.0, 12.0], [15.0, 20.0, 45.0, 5.0]),
    ]
    for instances, (size, box, points) in zip(results, expected, strict=True):
        assert instances.image_size == size
        assert float(instances.scores[0]) == pytest.approx(torch.sigmoid(torch.tensor(5.0)).item())
        assert torch.allclose(instances.pred_boxes.tensor[0], torch.tensor(box), atol=1e-4)
        assert torch.allclose(instances.polygons[0, :4], torch.tensor(points), atol=1e-4)


def test_missing_parts_give_errors_that_name_them(tiny_model, monkeypatch):
    instances = _instances((80, 200), [TALL_WORD_BOX], [TALL_WORD_BEZIER], [0], [[5]])
    instances.remove("gt_rec")
    with pytest.raises(ValueError, match=r"^training instances lack the field 'gt_rec' \(see the mapper contract "
                                         r"in docs/ARCHITECTURE.md\)$"):
        tiny_model.official_targets([instances], [(80, 200)])
    monkeypatch.setattr(tiny_model, "postprocess", None)
    with pytest.raises(RuntimeError, match="^ESTS was built without a post-processor and cannot run inference$"):
        tiny_model.inference({}, [{}], [(80, 200)])
