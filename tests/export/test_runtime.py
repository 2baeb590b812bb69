"""OnnxTextSpotter (numpy + onnxruntime) against the PyTorch TextSpotterPredictor, and its input checks."""
import json
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest
from detectron2.data.transforms import ResizeShortestEdge

from ests_d2.engine.predictor import TextSpotterPredictor
from tests.export.tiny_export import REAL_IMAGE, REPO

pytest.importorskip("onnxruntime", reason="the ONNX tests need the export extra: pip install -e .[export]")
from ests_d2.export.runtime import OnnxTextSpotter, TextDetections, resize_shortest_edge_shape  # noqa: E402


@pytest.fixture(scope="module")
def both(tiny_onnx):
    predictor = TextSpotterPredictor.from_files(str(tiny_onnx["config"]), str(tiny_onnx["weights"]))
    return predictor, OnnxTextSpotter(tiny_onnx["onnx"])


def test_resize_rule_is_detectron2s():
    for height, width in [(720, 1280), (1280, 720), (333, 333), (100, 2000), (2000, 99), (1001, 1823)]:
        for short, longest in [(1000, 1824), (800, 1024), (160, 288)]:
            assert resize_shortest_edge_shape(height, width, short, longest) == \
                ResizeShortestEdge.get_output_shape(height, width, short, longest)


def test_preprocessing_gives_the_network_input_of_the_pytorch_predictor(both):
    predictor, spotter = both
    image = cv2.imread(str(REAL_IMAGE))
    rgb = image[:, :, ::-1]
    resized = predictor.aug.get_transform(rgb).apply_image(rgb)
    import torch

    expected = predictor.model.normalize(torch.as_tensor(resized.astype("float32").transpose(2, 0, 1)))
    np.testing.assert_array_equal(spotter.preprocess(image)[0], expected.numpy())


@pytest.mark.parametrize("scale", [1.0, 0.6])
def test_onnx_spotter_gives_the_pytorch_predictions(both, scale):
    """Same texts, same selections; scores and polygons within the export tolerance (two image sizes)."""
    predictor, spotter = both
    image = cv2.imread(str(REAL_IMAGE))
    image = cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA) if scale != 1 else image
    torch_out = predictor(image)["instances"]
    onnx_out = spotter(image)["instances"]
    assert len(onnx_out) == len(torch_out) == 20
    assert onnx_out.texts == list(torch_out.texts)
    np.testing.assert_array_equal(onnx_out.pred_classes, torch_out.pred_classes.numpy())
    np.testing.assert_array_equal(onnx_out.rec, torch_out.rec.numpy())
    np.testing.assert_allclose(onnx_out.scores, torch_out.scores.numpy(), rtol=0, atol=1e-3)
    np.testing.assert_allclose(onnx_out.rec_scores, torch_out.rec_scores.numpy(), rtol=0, atol=1e-3)
    # polygons and boxes in pixels: the 1e-3 bound on normalised coordinates, times the image side
    bound = 1e-3 * max(image.shape[:2])
    np.testing.assert_allclose(onnx_out.polygons, torch_out.polygons.numpy(), rtol=0, atol=bound)
    np.testing.assert_allclose(onnx_out.pred_boxes, torch_out.pred_boxes.tensor.numpy(), rtol=0, atol=bound)


def test_score_threshold_and_detections_indexing(tiny_onnx):
    spotter = OnnxTextSpotter(tiny_onnx["onnx"])
    detections = spotter(cv2.imread(str(REAL_IMAGE)))["instances"]
    threshold = float(detections.scores[3])
    kept = OnnxTextSpotter(tiny_onnx["onnx"], score_threshold=threshold)(cv2.imread(str(REAL_IMAGE)))["instances"]
    assert len(kept) == int((detections.scores >= threshold).sum())
    assert kept.texts == detections.texts[:len(kept)]
    subset = detections[np.array([2, 0])]
    assert isinstance(subset, TextDetections) and subset.texts == [detections.texts[2], detections.texts[0]]
    assert subset.polygons.shape == (2, 32) and subset.image_size == detections.image_size


def test_broken_sidecars_name_the_file_and_the_field(tiny_onnx, tmp_path):
    sidecar = json.loads(tiny_onnx["sidecar"].read_text(encoding="utf-8"))
    del sidecar["vocabulary"]["characters"]
    broken = tmp_path / "broken.json"
    broken.write_text(json.dumps(sidecar))
    with pytest.raises(ValueError, match=r"broken\.json: missing field 'vocabulary\.characters'"):
        OnnxTextSpotter(tiny_onnx["onnx"], sidecar=broken)
    sidecar = json.loads(tiny_onnx["sidecar"].read_text(encoding="utf-8"))
    sidecar["format"] = "something-else/9"
    broken.write_text(json.dumps(sidecar))
    with pytest.raises(ValueError, match="field 'format'"):
        OnnxTextSpotter(tiny_onnx["onnx"], sidecar=broken)
    with pytest.raises(FileNotFoundError, match="sidecar"):
        OnnxTextSpotter(tiny_onnx["onnx"], sidecar=tmp_path / "absent.json")
    with pytest.raises(ValueError, match="uint8"):
        OnnxTextSpotter(tiny_onnx["onnx"])(np.zeros((40, 40, 3), np.float32))


@pytest.mark.slow
def test_demo_runs_the_onnx_model(tiny_onnx, tmp_path):
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.run(
        [sys.executable, str(REPO / "tools" / "demo.py"), "--onnx", str(tiny_onnx["onnx"]), "--input",
         str(REAL_IMAGE), "--output", str(tmp_path), "--confidence-threshold", "0"],
        capture_output=True, text=True, env=env, cwd=REPO, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    record = json.loads((tmp_path / "img_52.json").read_text())
    assert len(record["instances"]) == 20
    spotter = OnnxTextSpotter(tiny_onnx["onnx"])
    assert [r["text"] for r in record["instances"]] == spotter(cv2.imread(str(REAL_IMAGE)))["instances"].texts
    assert (tmp_path / "img_52.png").is_file()


def test_runtime_needs_neither_torch_nor_detectron2(tiny_onnx):
    """A deployment installs onnxruntime, numpy and Pillow: the spotter must not import torch or detectron2."""
    code = (
        "import sys; sys.modules['torch'] = None; sys.modules['detectron2'] = None\n"
        "import numpy as np\n"
        "from ests_d2.export.runtime import OnnxTextSpotter\n"
        f"out = OnnxTextSpotter({str(tiny_onnx['onnx'])!r})(np.full((90, 120, 3), 128, np.uint8))['instances']\n"
        "print(len(out), sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'detectron2') "
        "and sys.modules[m] is not None))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=300,
                          env=dict(os.environ, PYTHONPATH=str(REPO)))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.split() == ["20", "[]"]
