"""Helpers of the data tests: where the shared reference data lives, a small-size ESTS config, a small json.

The shared folder is found by ``tests/shared_paths.py`` (``$ESTS_SHARED_DIR``, ``<repo>/../shared``, or the one
beside the main checkout of a git worktree); tests skip with a clear reason when it is absent.
"""
import copy
import json
from pathlib import Path

import cv2
import numpy as np
from detectron2.config import get_cfg

import ests_d2.data  # noqa: F401  (registers the built-in datasets)
from ests_d2.config import add_ests_config
from tests.shared_paths import require_shared


def scene_text_dir() -> Path:
    """``<shared>/data/scene_text`` (33 real annotated images), or skip the calling test."""
    return require_shared("data/scene_text")


def make_text_cfg():
    """An ESTS config with the official augmentation recipe at small sizes (fast on CPU)."""
    cfg = get_cfg()
    add_ests_config(cfg)
    cfg.INPUT.FORMAT = "RGB"
    cfg.INPUT.MIN_SIZE_TRAIN = (256, 288, 320)
    cfg.INPUT.MAX_SIZE_TRAIN = 512
    cfg.INPUT.MIN_SIZE_TEST = 320
    cfg.INPUT.MAX_SIZE_TEST = 512
    cfg.DATASETS.TRAIN = ()
    cfg.DATASETS.TEST = ()
    return cfg


def write_text_dataset(tmp_path, mutate=None) -> str:
    """A valid one-image json (image 'a.jpg', id 3) with annotations 7 and 8; ``mutate(coco)`` breaks it."""
    cv2.imwrite(str(tmp_path / "a.jpg"), np.full((100, 200, 3), 128, np.uint8))
    quad = [10.0, 10.0, 40.0, 10.0, 70.0, 10.0, 100.0, 10.0, 100.0, 40.0, 70.0, 40.0, 40.0, 40.0, 10.0, 40.0]
    ann = {"id": 7, "image_id": 3, "category_id": 1, "iscrowd": 0, "bbox": [10, 10, 90, 30],
           "bezier_pts": quad, "rec": [33, 34] + [96] * 23, "area": 2700.0}
    ann2 = copy.deepcopy(ann)
    ann2.update(id=8, bezier_pts=[v + 50 if i % 2 else v for i, v in enumerate(quad)], bbox=[10, 60, 90, 30])
    coco = {"images": [{"id": 3, "file_name": "a.jpg", "height": 100, "width": 200}],
            "annotations": [ann, ann2], "categories": [{"id": 1, "name": "text"}]}
    if mutate is not None:
        mutate(coco)
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(coco))
    return str(path)


def assert_names_file_and_annotation(message: str, json_file: str, ann_id: int = 7) -> None:
    assert json_file in message
    assert "'a.jpg'" in message
    assert f"annotation id {ann_id}" in message
