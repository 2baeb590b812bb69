"""Helpers of the data tests: where the shared reference data lives, a small-size ESTS config.

The shared folder: CI has it at ``<repo>/../shared``; a git worktree under ``<root>/wt/<name>`` sees it at
``<repo>/../../shared``. Tests skip with a clear reason when it is absent.
"""
from pathlib import Path

import pytest
from detectron2.config import get_cfg

import ests_d2.data  # noqa: F401  (registers the built-in datasets)
from ests_d2.config import add_ests_config

REPO_ROOT = Path(__file__).resolve().parents[2]
_CANDIDATES = (REPO_ROOT / ".." / "shared", REPO_ROOT / ".." / ".." / "shared")


def shared_dir() -> Path:
    """The shared folder, or skip the calling test."""
    for candidate in _CANDIDATES:
        if (candidate / "data" / "scene_text").is_dir():
            return candidate.resolve()
    pytest.skip(f"shared reference data not found at {', '.join(str(c) for c in _CANDIDATES)}")


def scene_text_dir() -> Path:
    return shared_dir() / "data" / "scene_text"


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
