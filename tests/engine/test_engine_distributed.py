"""Two CPU processes (gloo) through ``ests_d2.engine.launch``: DDP keeps both ranks identical, also after --resume;
a preemption signal to one rank stops both after the same iteration."""
import json
import signal

import pytest
import torch

from ests_d2.engine import PREEMPTED_EXIT_CODE, TrainingPreempted, launch
from tests.engine.tiny_engine import tiny_cfg, train_and_save, train_until_signalled


@pytest.mark.slow
def test_two_process_gloo_run_ends_with_identical_weights(tmp_path):
    cfg = tiny_cfg(tmp_path / "run", "SOLVER.IMS_PER_BATCH", 4, "SOLVER.MAX_ITER", 6)
    launch(train_and_save, 2, dist_url="auto", args=(cfg, str(tmp_path)), backend="gloo")

    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2)]
    assert [r["world_size"] for r in ranks] == [2, 2]
    assert [r["batches_consumed"] for r in ranks] == [6, 6]
    # The ranks started apart (else the test proves nothing) ...
    assert any(not torch.equal(ranks[0]["initial"][k], ranks[1]["initial"][k]) for k in ranks[0]["initial"])
    for k, v in ranks[0]["final"].items():
        assert torch.equal(v, ranks[1]["final"][k]), k  # ... and ended identical
        assert torch.isfinite(v).all()
    assert any(not torch.equal(ranks[0]["final"][k], ranks[0]["initial"][k]) for k in ranks[0]["final"])
    # Only the main process writes metrics and checkpoints.
    with open(tmp_path / "run" / "metrics.json") as f:
        iterations = [json.loads(line)["iteration"] for line in f if "total_loss" in line]
    assert iterations == list(range(6))
    assert (tmp_path / "run" / "model_final.pth").is_file()

    # Resume both ranks from the checkpoint rank 0 wrote, with a longer schedule.
    cfg = tiny_cfg(tmp_path / "run", "SOLVER.IMS_PER_BATCH", 4, "SOLVER.MAX_ITER", 9)
    launch(train_and_save, 2, dist_url="auto", args=(cfg, str(tmp_path), True), backend="gloo")
    resumed = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2)]
    assert [r["start_iter"] for r in resumed] == [6, 6]
    assert [r["batches_consumed"] for r in resumed] == [9, 9]
    for k, v in resumed[0]["final"].items():
        assert torch.equal(v, resumed[1]["final"][k]), k
    assert any(not torch.equal(resumed[0]["final"][k], ranks[0]["final"][k]) for k in ranks[0]["final"])


@pytest.mark.slow
def test_a_signal_to_one_process_stops_all_after_the_same_iteration(tmp_path):
    cfg = tiny_cfg(tmp_path / "run", "SOLVER.IMS_PER_BATCH", 4, "SOLVER.MAX_ITER", 9, "SOLVER.CHECKPOINT_PERIOD", 100)
    with pytest.raises(TrainingPreempted) as stopped:
        launch(train_until_signalled, 2, dist_url="auto", args=(cfg, str(tmp_path), 1, 2, signal.SIGTERM),
               backend="gloo")
    assert stopped.value.code == PREEMPTED_EXIT_CODE
    # Rank 1 got the signal during iteration 2's hooks, after the preemption hook's turn: all stop after 3,
    # and rank 0, which got no signal, wrote the checkpoint.
    assert (tmp_path / "run" / "last_checkpoint").read_text() == "model_0000003.pth"
    assert torch.load(tmp_path / "run" / "model_0000003.pth", weights_only=True)["iteration"] == 3

    launch(train_until_signalled, 2, dist_url="auto", args=(cfg, str(tmp_path), -1, 0, signal.SIGTERM),
           backend="gloo")
    assert [(tmp_path / f"rank{r}_start.txt").read_text() for r in range(2)] == ["4", "4"]
    assert torch.load(tmp_path / "run" / "model_final.pth", weights_only=True)["iteration"] == 8
