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
