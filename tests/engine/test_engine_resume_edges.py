"""``--resume`` edge cases, each with the real ``tools/train_net.py`` in a subprocess: a changed config,
a stale or missing ``last_checkpoint``, a run that restarts from scratch over its own metrics.json."""
import pytest
import torch
from detectron2.config import CfgNode

from tests.engine.train_net_runs import TrainNet, assert_same_run, logged_iterations, run_to_end
from tests.engine.train_net_runs import uninterrupted, write_config

SHORT = ("SOLVER.MAX_ITER", 6, "SOLVER.CHECKPOINT_PERIOD", 2)


def _recorded(path):
    with open(path) as f:
        return CfgNode.load_cfg(f)


@pytest.mark.slow
def test_changed_config_is_listed_refused_and_allowed_only_as_it_takes_effect(tmp_path):
    config, out = write_config(tmp_path, *SHORT), tmp_path / "out"
    run_to_end(config)
    saved = (out / "config.yaml").read_text()
    changes = ("SOLVER.BASE_LR", "0.1", "SOLVER.CLIP_GRADIENTS.CLIP_VALUE", "0.5", "SOLVER.LOG_PERIOD", "2",
               "SOLVER.MAX_ITER", "9")

    code, log = TrainNet(config, "--resume", *changes).wait()
    assert code == 2, log[-3000:]
    for listed in ("SOLVER.BASE_LR: 0.01 -> 0.1: would not take effect",
                   "SOLVER.CLIP_GRADIENTS.CLIP_VALUE: 0.1 -> 0.5: takes effect from the next iteration",
                   "SOLVER.LOG_PERIOD: 1 -> 2: takes effect", "SOLVER.MAX_ITER: 6 -> 9: takes effect"):
        assert listed in log
    assert "Refused (SOLVER.BASE_LR, SOLVER.CLIP_GRADIENTS.CLIP_VALUE)" in log
    assert "Starting training" not in log and "Traceback" not in log
    assert (out / "config.yaml").read_text() == saved

    log = run_to_end(config, "--resume", "--allow-config-change", *changes)
    assert "Starting training from iteration 6" in log
    recorded = _recorded(out / "config.yaml")
    assert recorded.SOLVER.BASE_LR == 0.01  # the checkpoint's optimizer state kept it: recorded as such
    assert recorded.SOLVER.CLIP_GRADIENTS.CLIP_VALUE == 0.5 and recorded.SOLVER.MAX_ITER == 9
    assert _recorded(out / "config_until_iter_0000005.yaml").SOLVER.CLIP_GRADIENTS.CLIP_VALUE == 0.1
    # What was trained is what is recorded: 0.01 until the step at iteration 8, then 0.01 * GAMMA.
    final = torch.load(out / "model_final.pth", weights_only=True)
    assert final["iteration"] == 8
    assert [g["lr"] for g in final["trainer"]["_trainer"]["optimizer"]["param_groups"]] == pytest.approx(
        [1e-3, 1e-4]
    )


@pytest.mark.slow
def test_stale_or_missing_last_checkpoint_falls_back_to_the_newest_loadable_one(tmp_path):
    config, out = write_config(tmp_path, *SHORT), tmp_path / "out"
    run_to_end(config)
    reference = uninterrupted(tmp_path, *SHORT)

    # last_checkpoint names a deleted file; the newest file by name is torn.
    (out / "model_final.pth").unlink()
    (out / "model_0000005.pth").unlink()
    (out / "model_0000009.pth").write_bytes(b"PK\x03\x04 torn")
    log = run_to_end(config, "--resume")
    assert "last_checkpoint names model_final.pth, which does not exist: resuming from model_0000003.pth" in log
    assert "Not resuming from" in log and "model_0000009.pth: it does not load" in log
    assert "Starting training from iteration 4" in log
    assert_same_run(out, reference)

    # Killed after the first checkpoint's rename, before last_checkpoint existed.
    for name in ("last_checkpoint", "model_final.pth", "model_0000005.pth", "model_0000003.pth", "model_0000009.pth"):
        (out / name).unlink()
    log = run_to_end(config, "--resume")
    assert "there is no last_checkpoint: resuming from model_0000001.pth (iteration 1)" in log
    assert "Starting training from iteration 2" in log
    assert (out / "last_checkpoint").read_text() == "model_final.pth"
    assert_same_run(out, reference)


@pytest.mark.slow
def test_resume_without_a_checkpoint_rewrites_metrics_instead_of_repeating_them(tmp_path):
    """A run killed before its first checkpoint: the resumed run starts over and logs each iteration once."""
    config, out = write_config(tmp_path, *SHORT), tmp_path / "out"
    run_to_end(config)
    for path in [out / "last_checkpoint", *out.glob("*.pth")]:
        path.unlink()

    log = run_to_end(config, "--resume")
    assert "Starting training from iteration 0" in log
    assert logged_iterations(out) == list(range(6))
    assert_same_run(out, uninterrupted(tmp_path, *SHORT))
