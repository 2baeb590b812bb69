"""tools/demo.py on a real ICDAR 2015 image with a tiny randomly initialised ESTS saved as a checkpoint."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.modeling import build_model
from PIL import Image

import ests_d2.modeling  # noqa: F401  (registers the meta-architecture)

from tests.modeling.model_config import tiny_ests_cfg

REPO = Path(__file__).resolve().parents[2]
IMAGE = REPO / "datasets" / "icdar2015_samples" / "images" / "img_52.jpg"


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    """(config file, weights file) of a tiny random ESTS, small test sizes to keep the demo fast."""
    folder = tmp_path_factory.mktemp("demo_model")
    cfg = tiny_ests_cfg()
    cfg.INPUT.MIN_SIZE_TEST = 128
    cfg.INPUT.MAX_SIZE_TEST = 224
    torch.manual_seed(0)
    DetectionCheckpointer(build_model(cfg), save_dir=str(folder)).save("tiny_random")
    config = folder / "tiny.yaml"
    config.write_text(cfg.dump())
    return config, folder / "tiny_random.pth"


def _run_demo(config, weights, output, *extra):
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.run(
        [sys.executable, str(REPO / "tools" / "demo.py"), "--config-file", str(config), "--input", str(IMAGE),
         "--output", str(output), *extra, "--opts", "MODEL.WEIGHTS", str(weights)],
        capture_output=True, text=True, env=env, cwd=REPO, timeout=300,
    )


def test_demo_draws_predictions_on_the_real_image_and_writes_json(tiny_checkpoint, tmp_path):
    config, weights = tiny_checkpoint
    proc = _run_demo(config, weights, tmp_path, "--confidence-threshold", "0")
    assert proc.returncode == 0, proc.stderr[-3000:]
    original = np.asarray(Image.open(IMAGE).convert("RGB"))
    picture = np.asarray(Image.open(tmp_path / "img_52.png").convert("RGB"))
    assert picture.shape == original.shape  # drawn at the original resolution (720 x 1280)
    assert picture.std() > 10  # not blank
    # every kept instance is drawn: the picture differs from the photo
    assert np.abs(picture.astype(int) - original.astype(int)).mean() > 1.0

    record = json.loads((tmp_path / "img_52.json").read_text())
    assert record["file_name"] == str(IMAGE)
    assert (record["height"], record["width"]) == original.shape[:2]
    assert record["confidence_threshold"] == 0.0
    assert len(record["instances"]) == 20  # threshold 0 keeps all NUM_SELECT predictions
    for instance in record["instances"]:
        assert set(instance) == {"polygon", "text", "score", "char_scores"}
        assert len(instance["polygon"]) == 16 and all(len(p) == 2 for p in instance["polygon"])
        assert isinstance(instance["text"], str) and 0.0 <= instance["score"] <= 1.0
        assert len(instance["char_scores"]) == 25


def test_demo_with_an_impossible_threshold_draws_nothing(tiny_checkpoint, tmp_path):
    config, weights = tiny_checkpoint
    proc = _run_demo(config, weights, tmp_path, "--confidence-threshold", "1.01")
    assert proc.returncode == 0, proc.stderr[-3000:]
    record = json.loads((tmp_path / "img_52.json").read_text())
    assert record["instances"] == []
    original = np.asarray(Image.open(IMAGE).convert("RGB")).astype(int)
    picture = np.asarray(Image.open(tmp_path / "img_52.png").convert("RGB")).astype(int)
    assert np.abs(picture - original).mean() < 1.0  # the photo itself (up to JPEG decoding)


def test_demo_rejects_an_input_that_matches_nothing(tiny_checkpoint, tmp_path):
    config, weights = tiny_checkpoint
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.run(
        [sys.executable, str(REPO / "tools" / "demo.py"), "--config-file", str(config),
         "--input", str(tmp_path / "nothing_*.jpg"), "--output", str(tmp_path)],
        capture_output=True, text=True, env=env, cwd=REPO, timeout=300,
    )
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines()[-1] == f"demo.py: error: --input {str(tmp_path / 'nothing_*.jpg')!r} " \
        "matches no file"


def test_demo_names_a_config_file_that_does_not_exist(tmp_path):
    # detectron2 asserts that the config file exists: a mistake of the user's, said without the exception type
    proc = _run_demo(tmp_path / "missing.yaml", tmp_path / "weights.pth", tmp_path)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines()[-1] == f"demo.py: error: Config file '{tmp_path / 'missing.yaml'}' " \
        "does not exist!"


def test_demo_names_a_font_file_that_does_not_exist(tiny_checkpoint, tmp_path):
    config, weights = tiny_checkpoint
    proc = _run_demo(config, weights, tmp_path, "--font", str(tmp_path / "NotoSansCJK.ttc"))
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines()[-1] == f"demo.py: error: --font {tmp_path / 'NotoSansCJK.ttc'}: " \
        f"font file not found: {tmp_path / 'NotoSansCJK.ttc'}"


def test_demo_runs_the_int8_model(tiny_checkpoint, tmp_path):
    config, weights = tiny_checkpoint
    proc = _run_demo(config, weights, tmp_path, "--quantize", "int8", "--confidence-threshold", "0")
    assert proc.returncode == 0, proc.stderr[-3000:]
    record = json.loads((tmp_path / "img_52.json").read_text())
    assert len(record["instances"]) > 0 and (tmp_path / "img_52.png").exists()


def test_demo_refuses_quantize_with_an_onnx_model(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.run([sys.executable, str(REPO / "tools" / "demo.py"), "--onnx", str(tmp_path / "m.onnx"),
                           "--quantize", "int8", "--input", str(IMAGE), "--output", str(tmp_path)],
                          capture_output=True, text=True, env=env, cwd=REPO, timeout=300)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines()[-1] == "demo.py: error: --quantize applies to PyTorch inference " \
        "(--config-file); an int8 ONNX model is made by tools/export_model.py --quantize int8"
