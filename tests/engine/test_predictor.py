"""TextSpotterPredictor: the PyTorch Python API (detectron2 DefaultPredictor shape) on a real image."""
import cv2
import numpy as np
import pytest
import torch

from ests_d2.engine.predictor import TextSpotterPredictor
from tests.export.tiny_export import REAL_IMAGE, tiny_model_files


@pytest.fixture(scope="module")
def tiny_files(tmp_path_factory):
    config, weights, model = tiny_model_files(tmp_path_factory.mktemp("predictor"))
    return config, weights, model


def test_predictor_returns_texts_polygons_and_scores_in_image_pixels(tiny_files):
    config, weights, model = tiny_files
    predictor = TextSpotterPredictor.from_files(str(config), str(weights))
    image = cv2.imread(str(REAL_IMAGE))
    instances = predictor(image)["instances"]
    assert instances.image_size == image.shape[:2]
    assert len(instances) == 20  # threshold 0: every NUM_SELECT detection
    assert len(instances.texts) == 20 and all(isinstance(t, str) for t in instances.texts)
    assert instances.polygons.shape == (20, 32) and instances.rec_scores.shape == (20, 25)
    assert torch.all(instances.scores[:-1] >= instances.scores[1:])
    # polygons are normalised by the resized input and scaled back to the 720 x 1280 photo
    assert float(instances.pred_boxes.tensor[:, 2].max()) > 288  # beyond the resized width (MAX_SIZE_TEST)


def test_threshold_keeps_only_confident_detections(tiny_files):
    config, weights, _ = tiny_files
    everything = TextSpotterPredictor.from_files(str(config), str(weights))(cv2.imread(str(REAL_IMAGE)))
    scores = everything["instances"].scores
    threshold = float(scores[5])
    kept = TextSpotterPredictor.from_files(str(config), str(weights), score_threshold=threshold)(
        cv2.imread(str(REAL_IMAGE)))["instances"]
    assert len(kept) == int((scores >= threshold).sum()) and len(kept) < len(scores)
    assert list(kept.texts) == list(everything["instances"].texts[:len(kept)])


def test_bad_inputs_get_clear_errors(tiny_files):
    config, weights, _ = tiny_files
    predictor = TextSpotterPredictor.from_files(str(config), str(weights))
    with pytest.raises(ValueError, match="uint8"):
        predictor(np.zeros((32, 32, 3), np.float32))
    with pytest.raises(ValueError, match="BGR image"):
        predictor(np.zeros((32, 32), np.uint8))
    with pytest.raises(ValueError, match="MODEL.WEIGHTS is empty"):
        TextSpotterPredictor.from_files(str(config), "")


def test_int8_predictor_quantizes_the_transformer_products_and_keeps_the_heads_float32(tiny_files):
    from torch.ao.nn.quantized.dynamic import Linear as Int8Linear

    from ests_d2.export.quantize import FLOAT32_NODE_KEYS, int8_linear_names

    config, weights, _ = tiny_files
    float32 = TextSpotterPredictor.from_files(str(config), str(weights))
    int8 = TextSpotterPredictor.from_files(str(config), str(weights), quantize="int8")
    names = int8_linear_names(float32.model)
    modules = dict(int8.model.named_modules())
    assert names and all(isinstance(modules[n], Int8Linear) for n in names)
    kept = [n for n, m in float32.model.named_modules()
            if isinstance(m, torch.nn.Linear) and any(k in n for k in FLOAT32_NODE_KEYS)]
    assert kept and all(type(modules[n]) is torch.nn.Linear for n in kept)
    assert any("value_proj" in n for n in names) and any("linear1" in n for n in names)
    image = cv2.imread(str(REAL_IMAGE))
    expected, got = float32(image)["instances"], int8(image)["instances"]
    assert len(got) == len(expected) == 20 and got.polygons.shape == expected.polygons.shape
    assert all(isinstance(t, str) for t in got.texts)
    # int8 weights: close to the float32 model, not equal to it
    assert not torch.equal(got.scores, expected.scores)
    assert float((got.scores - expected.scores).abs().max()) < 0.2


def test_int8_predictor_refuses_what_it_cannot_do(tiny_files):
    from ests_d2.export.quantize import quantize_linears

    config, weights, _ = tiny_files
    with pytest.raises(ValueError, match="quantization mode 'int4'"):
        TextSpotterPredictor.from_files(str(config), str(weights), quantize="int4")
    model = TextSpotterPredictor.from_files(str(config), str(weights)).model
    with pytest.raises(ValueError, match="for inference"):
        quantize_linears(model.train())
