"""The real ESTS (tiny configuration) through the real mapper: stop + resume is still bitwise exact.

This is where resume exactness is hardest: denoising noise (torch RNG), the instance-preserving crop,
rotation and colour jitter of the mapper (numpy / python RNG) and a Hungarian matcher all take part.
"""
import json

import pytest
import torch
from detectron2.config import get_cfg
from detectron2.data import DatasetCatalog
from detectron2.utils.env import seed_all_rng

import ests_d2.modeling  # noqa: F401  (registers the ESTS meta-architecture)
from ests_d2.config import add_ests_config
from ests_d2.data.datasets import PROJECT_DATASETS_DIR
from ests_d2.engine import Trainer
from tests.engine.tiny_engine import SimulatedCrash, StopAfter

DATASET = "icdar2015_samples"


def _cfg(output_dir):
    cfg = get_cfg()
    add_ests_config(cfg)
    cfg.merge_from_file(str(PROJECT_DATASETS_DIR.parent / "configs/ESTS/Synthetic-Tiny.yaml"))
    cfg.merge_from_list(
        [
            "DATASETS.TRAIN", (DATASET,), "DATASETS.TEST", (),
            "INPUT.MIN_SIZE_TRAIN", (64, 80), "INPUT.MAX_SIZE_TRAIN", 160,
            "MODEL.ESTS.HIDDEN_DIM", 256, "MODEL.ESTS.DIM_FEEDFORWARD", 256,
            "MODEL.ESTS.NUM_QUERIES", 10, "MODEL.ESTS.NUM_SELECT", 10, "MODEL.ESTS.DN.NUMBER", 2,
            "MODEL.ESTS.DN.ENABLED", True, "INPUT.ROTATE.ENABLED", True,  # pinned: the demo yaml uses 2 DN groups and no rotation
            "MODEL.ESTS.ENC_LAYERS", 1, "MODEL.ESTS.DEC_LAYERS", 2,
            "SOLVER.IMS_PER_BATCH", 1, "SOLVER.MAX_ITER", 2, "SOLVER.STEPS", (), "SOLVER.CHECKPOINT_PERIOD", 1,
            "SOLVER.LOG_PERIOD", 1, "SOLVER.CLIP_GRADIENTS.ENABLED", True,
            "SOLVER.CLIP_GRADIENTS.CLIP_TYPE", "full_model", "SOLVER.CLIP_GRADIENTS.CLIP_VALUE", 0.1,
            "DATALOADER.NUM_WORKERS", 0, "OUTPUT_DIR", str(output_dir),
        ]
    )
    return cfg


def _train(cfg, resume=False, stop_after=None):
    seed_all_rng(cfg.SEED)
    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=resume)
    if stop_after is None:
        trainer.train()
    else:
        trainer.register_hooks([StopAfter(stop_after)])
        with pytest.raises(SimulatedCrash):
            trainer.train()
    return trainer


def _losses(output_dir):
    rows = [json.loads(line) for line in (output_dir / "metrics.json").read_text().splitlines()]
    return {r["iteration"]: {k: v for k, v in r.items() if k.startswith("loss") or k == "total_loss"} for r in rows}


@pytest.mark.slow
def test_real_ests_resumes_bitwise(tmp_path):
    assert DATASET in DatasetCatalog.list()  # shipped in the repository, registered by ests_d2.data
    full = _train(_cfg(tmp_path / "full"))
    _train(_cfg(tmp_path / "cut"), stop_after=0)
    resumed = _train(_cfg(tmp_path / "cut"), resume=True)
    assert resumed.start_iter == 1
    for k, v in full.model.state_dict().items():
        assert torch.equal(v, resumed.model.state_dict()[k]), k
    logged = _losses(tmp_path / "full")
    assert sorted(logged) == [0, 1] and len(logged[1]) > 20  # every loss term of both iterations
    assert _losses(tmp_path / "cut") == logged
