"""A tiny random ESTS saved as a checkpoint and exported once, shared by the export tests."""
from pathlib import Path

import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.modeling import build_model

import ests_d2.modeling  # noqa: F401  (registers the meta-architecture)
from tests.modeling.model_config import tiny_ests_cfg

REPO = Path(__file__).resolve().parents[2]
REAL_IMAGE = REPO / "datasets" / "icdar2015_samples" / "images" / "img_52.jpg"


def tiny_cfg(weights: str = ""):
    """The tiny test model with small test sizes (fast) and its weights file."""
    cfg = tiny_ests_cfg()
    cfg.INPUT.MIN_SIZE_TEST = 160
    cfg.INPUT.MAX_SIZE_TEST = 288
    cfg.MODEL.WEIGHTS = weights
    return cfg


def tiny_model_files(folder: Path):
    """(config file, weights file, model) of a tiny ESTS with seeded random weights."""
    cfg = tiny_cfg()
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    DetectionCheckpointer(model, save_dir=str(folder)).save("tiny_random")
    weights = folder / "tiny_random.pth"
    cfg.MODEL.WEIGHTS = str(weights)
    config = folder / "tiny.yaml"
    config.write_text(cfg.dump())
    return config, weights, model
