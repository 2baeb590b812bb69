"""Helpers of the data tests: where the shared reference data lives, a small-size ESTS config.

The shared folder is found as every test finds it (``tests/shared_paths.py``: ``$ESTS_SHARED_DIR`` first,
then ``<repo>/../shared``, then the one beside a worktree's main checkout). Tests skip with a clear reason
when it is absent.
"""
from pathlib import Path

from detectron2.config import get_cfg

import ests_d2.data  # noqa: F401  (registers the built-in datasets)
from ests_d2.config import add_ests_config
from tests.shared_paths import require_shared


def scene_text_dir() -> Path:
    """``data/scene_text`` of the shared folder, or skip the calling test."""
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
