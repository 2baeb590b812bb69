"""A real preemption signal to a real training process: checkpoint, exit 75, and a bitwise resume.

Each test starts ``tools/train_net.py`` (tiny task) in a subprocess, slowed in one phase by the
tiny engine's environment variables, sends the signal once the process is in that phase, then resumes
and compares with an uninterrupted run: final weights and every logged value.
"""
import signal

import pytest
import torch

from ests_d2.engine import PREEMPTED_EXIT_CODE
from tests.engine.train_net_runs import TrainNet, assert_same_run, logged_iterations, metric_rows, run_to_end
from tests.engine.train_net_runs import uninterrupted, write_config


@pytest.mark.slow
def test_sigterm_during_training_checkpoints_the_current_iteration_and_resumes_bitwise(tmp_path):
    opts = ("SOLVER.MAX_ITER", 20, "SOLVER.STEPS", (14,), "SOLVER.CHECKPOINT_PERIOD", 100)
    config, out = write_config(tmp_path, *opts), tmp_path / "out"
    run = TrainNet(config, TINY_ENGINE_STEP_SECONDS=0.1)
    code, log = run.signal_when(lambda: len(logged_iterations(out)) >= 5, signal.SIGTERM, "iteration 5")

    assert code == PREEMPTED_EXIT_CODE, log[-3000:]
    stopped_at = logged_iterations(out)[-1]
    assert 4 <= stopped_at < 19  # not the last iteration: the checkpoint below is the preemption's own
    assert f"SIGTERM received: stopped after iteration {stopped_at}" in log
    assert (out / "last_checkpoint").read_text() == f"model_{stopped_at:07d}.pth"
    assert torch.load(out / f"model_{stopped_at:07d}.pth", weights_only=True)["iteration"] == stopped_at

    log = run_to_end(config, "--resume")
    assert f"Starting training from iteration {stopped_at + 1}" in log
    assert_same_run(out, uninterrupted(tmp_path, *opts))


@pytest.mark.slow
def test_sigterm_during_a_checkpoint_write_lets_it_finish_and_stops(tmp_path):
    opts = ("SOLVER.CHECKPOINT_PERIOD", 4)
    config, out = write_config(tmp_path, *opts), tmp_path / "out"
    run = TrainNet(config, TINY_ENGINE_SAVE_SECONDS=1.0)
    writing = lambda: any(out.glob(".model_0000003.pth.*.tmp"))  # noqa: E731
    code, log = run.signal_when(writing, signal.SIGTERM, "the first checkpoint write")

    assert code == PREEMPTED_EXIT_CODE, log[-3000:]
    assert "SIGTERM received: stopped after iteration 3" in log
    assert not list(out.glob(".*.tmp"))
    assert sorted(p.name for p in out.glob("*.pth")) == ["model_0000003.pth"]  # written once, complete
    assert torch.load(out / "model_0000003.pth", weights_only=True)["iteration"] == 3

    run_to_end(config, "--resume")
    assert_same_run(out, uninterrupted(tmp_path, *opts))


@pytest.mark.slow
def test_configured_signal_during_evaluation_lets_it_finish_and_stops(tmp_path):
    opts = ("TEST.EVAL_PERIOD", 4, "SOLVER.CHECKPOINT_PERIOD", 100, "SOLVER.PREEMPT_SIGNALS", ("SIGTERM", "SIGUSR1"))
    config, out = write_config(tmp_path, *opts), tmp_path / "out"
    marker = tmp_path / "evaluating"
    run = TrainNet(config, TINY_ENGINE_EVAL_SECONDS=1.0, TINY_ENGINE_EVAL_MARKER=marker)
    code, log = run.signal_when(marker.exists, signal.SIGUSR1, "the first evaluation")

    assert code == PREEMPTED_EXIT_CODE, log[-3000:]
    assert "SIGUSR1 received: stopped after iteration 3" in log
    assert [r["tiny/num_images"] for r in metric_rows(out) if "tiny/num_images" in r] == [3.0]  # it finished
    assert (out / "last_checkpoint").read_text() == "model_0000003.pth"

    run_to_end(config, "--resume")
    assert_same_run(out, uninterrupted(tmp_path, *opts))


@pytest.mark.slow
def test_kill_during_the_final_evaluation_resumes_to_evaluate_at_the_same_iteration(tmp_path):
    config, out = write_config(tmp_path), tmp_path / "out"
    marker = tmp_path / "evaluating"
    run = TrainNet(config, TINY_ENGINE_EVAL_SECONDS=30, TINY_ENGINE_EVAL_MARKER=marker)
    code, _ = run.signal_when(marker.exists, signal.SIGKILL, "the final evaluation")
    assert code == -signal.SIGKILL
    assert (out / "last_checkpoint").read_text() == "model_final.pth"

    log = run_to_end(config, "--resume")
    assert "Starting training from iteration 12" in log
    rows = metric_rows(out)
    assert [r["iteration"] for r in rows if "tiny/num_images" in r] == [12]  # as the uninterrupted run
    assert all(r.get("eta_seconds", 0) >= 0 for r in rows), [r.get("eta_seconds") for r in rows]
    assert "eta: -" not in log
    assert_same_run(out, uninterrupted(tmp_path))
