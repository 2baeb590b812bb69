"""Exact resume: a run stopped at iteration k and resumed equals a run never stopped (CPU, bitwise)."""
import json

import pytest
import torch
from detectron2.utils.env import seed_all_rng

from tests.engine.tiny_engine import SimulatedCrash, StopAfter, TinyTrainer, tiny_cfg

LOSS_KEYS = ("total_loss", "loss_box", "loss_aux", "lr", "grad_norm")


def _train(cfg, resume=False, stop_after=None):
    seed_all_rng(1234)
    trainer = TinyTrainer(cfg)
    trainer.resume_or_load(resume=resume)
    if stop_after is not None:
        trainer.register_hooks([StopAfter(stop_after)])
        with pytest.raises(SimulatedCrash):
            trainer.train()
    else:
        trainer.train()
    return trainer


def _logged(output_dir):
    """iteration -> {loss keys}, from metrics.json (a later line for an iteration wins)."""
    logged = {}
    with open(output_dir / "metrics.json") as f:
        for line in f:
            row = json.loads(line)
            if "total_loss" in row:
                logged[row["iteration"]] = {k: row[k] for k in LOSS_KEYS if k in row}
    return logged


def _weights(trainer):
    return {k: v.clone() for k, v in trainer.model.state_dict().items()}


@pytest.mark.parametrize("num_workers,grouping", [(0, True), (2, False)])
def test_stop_and_resume_is_bitwise_identical(tmp_path, num_workers, grouping):
    opts = ["DATALOADER.NUM_WORKERS", num_workers, "DATALOADER.ASPECT_RATIO_GROUPING", grouping]
    full = _train(tiny_cfg(tmp_path / "full", *opts))
    _train(tiny_cfg(tmp_path / "cut", *opts), stop_after=5)
    resumed = _train(tiny_cfg(tmp_path / "cut", *opts), resume=True)

    assert resumed.start_iter == 6
    w_full, w_resumed = _weights(full), _weights(resumed)
    assert w_full.keys() == w_resumed.keys()
    for k in w_full:
        assert torch.equal(w_full[k], w_resumed[k]), k
    logged_full, logged_cut = _logged(tmp_path / "full"), _logged(tmp_path / "cut")
    assert sorted(logged_full) == list(range(12))
    assert logged_cut == logged_full
    # Guard against a vacuous pass: the weights did move, the data did matter.
    assert len({round(v["loss_box"], 6) for v in logged_full.values()}) > 6


def test_run_killed_between_last_checkpoint_and_model_final_still_gets_model_final(tmp_path):
    cfg = tiny_cfg(tmp_path, "SOLVER.CHECKPOINT_PERIOD", 1, "SOLVER.MAX_ITER", 6)
    _train(cfg)
    last = torch.load(tmp_path / "model_0000005.pth", weights_only=True)
    # The kill landed after model_0000005.pth was tagged and before model_final.pth was written.
    (tmp_path / "model_final.pth").unlink()
    (tmp_path / "last_checkpoint").write_text("model_0000005.pth")

    resumed = _train(cfg, resume=True)

    assert resumed.start_iter == 6  # nothing left to train
    final = torch.load(tmp_path / "model_final.pth", weights_only=True)
    assert final["iteration"] == 5
    for k, v in last["model"].items():
        assert torch.equal(final["model"][k], v), k
    assert (tmp_path / "last_checkpoint").read_text() == "model_final.pth"
