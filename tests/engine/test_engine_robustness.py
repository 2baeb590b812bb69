"""Surviving OOM and non-finite steps; mixed precision on CPU; what a checkpoint holds."""
import json

import pytest
import torch
from detectron2.engine import HookBase
from detectron2.utils.env import seed_all_rng

from tests.engine.tiny_engine import TinyTrainer, tiny_cfg


def _rows(output_dir):
    with open(output_dir / "metrics.json") as f:
        return {row["iteration"]: row for row in map(json.loads, f)}


class RecordWeights(HookBase):
    """Weights before and after every step."""

    def __init__(self):
        self.before, self.after = {}, {}

    def _snapshot(self):
        return torch.cat([p.detach().flatten().clone() for p in self.trainer.model.parameters()])

    def before_step(self):
        self.before[self.trainer.iter] = self._snapshot()

    def after_step(self):
        self.after[self.trainer.iter] = self._snapshot()


def _train(cfg, *hooks):
    seed_all_rng(0)
    trainer = TinyTrainer(cfg)
    trainer.resume_or_load(resume=False)
    trainer.register_hooks(list(hooks))
    trainer.train()
    return trainer


def test_injected_oom_is_retried_smaller_or_skipped(tmp_path):
    # Iteration 3 fails once (retried smaller), iteration 5 fails on all 3 tries (skipped).
    cfg = tiny_cfg(
        tmp_path,
        "SOLVER.OOM.INJECT_AT_ITERS", (3, 5, 5, 5),
        "SOLVER.OOM.MAX_RETRIES", 2,
        "INPUT.MIN_SIZE_TRAIN", (8, 10, 12, 16, 20, 24),
    )
    record = RecordWeights()
    trainer = _train(cfg, record)
    assert trainer.iter == 12  # finished
    rows = _rows(tmp_path)
    assert rows[11]["oom_retries"] == 3 and rows[11]["oom_skips"] == 1
    assert rows[2]["oom_retries"] == 0 and rows[3]["oom_retries"] == 1 and rows[4]["oom_skips"] == 0
    assert "total_loss" in rows[3]  # the retried step trained
    assert "total_loss" not in rows[5]  # the skipped one did not ...
    assert torch.equal(record.before[5], record.after[5])  # ... and changed nothing
    assert not torch.equal(record.before[3], record.after[3])


def test_nonfinite_loss_and_gradients_are_skipped_and_counted(tmp_path):
    cfg = tiny_cfg(tmp_path)
    cfg.MODEL.TINY_NAN_AT_ITERS = (4,)
    cfg.MODEL.TINY_NAN_GRAD_AT_ITERS = (7,)
    record = RecordWeights()
    trainer = _train(cfg, record)
    assert trainer.iter == 12
    rows = _rows(tmp_path)
    assert rows[11]["nonfinite_skips"] == 2 and rows[6]["nonfinite_skips"] == 1
    for it in (4, 7):
        assert torch.equal(record.before[it], record.after[it]), it
    for it in (3, 5, 6, 8):
        assert not torch.equal(record.before[it], record.after[it]), it
        assert torch.isfinite(record.after[it]).all()


def test_diverged_training_stops(tmp_path):
    cfg = tiny_cfg(tmp_path, "SOLVER.MAX_CONSECUTIVE_NONFINITE", 3)
    cfg.MODEL.TINY_NAN_AT_ITERS = (2, 3, 4)
    with pytest.raises(FloatingPointError, match="3 consecutive non-finite steps"):
        _train(cfg)


def test_bf16_autocast_trains_on_cpu(tmp_path):
    cfg = tiny_cfg(tmp_path, "SOLVER.AMP.ENABLED", True, "SOLVER.AMP.PRECISION", "bfloat16")
    dtypes = set()
    record = RecordWeights()
    seed_all_rng(0)
    trainer = TinyTrainer(cfg)

    def record_dtype(module, inputs, output):
        if module.training:
            dtypes.add(output.dtype)

    trainer.model.backbone[0].register_forward_hook(record_dtype)
    trainer.register_hooks([record])
    trainer.train()
    assert dtypes == {torch.bfloat16}
    assert not trainer._trainer.grad_scaler.is_enabled()  # bf16 needs no loss scaling
    rows = _rows(tmp_path)
    losses = [rows[i]["total_loss"] for i in range(12)]
    assert all(torch.isfinite(torch.tensor(losses)))
    assert not torch.equal(record.before[0], record.after[11])


# An overflow at the first steps means the scheduler steps before any optimizer step: expected here.
@pytest.mark.filterwarnings("ignore:Detected call of `lr_scheduler.step\\(\\)` before:UserWarning")
def test_fp16_grad_scaler_handles_overflow_and_is_checkpointed(tmp_path):
    opts = ("SOLVER.AMP.ENABLED", True, "SOLVER.AMP.PRECISION", "float16", "SOLVER.MAX_ITER", 6)
    cfg = tiny_cfg(tmp_path, *opts)
    cfg.MODEL.TINY_NAN_GRAD_AT_ITERS = (2,)  # an "overflow": the scaler skips the step and halves its scale
    record = RecordWeights()
    trainer = _train(cfg, record)
    scaler = trainer._trainer.grad_scaler
    assert scaler.is_enabled()
    assert torch.equal(record.before[2], record.after[2])
    rows = _rows(tmp_path)
    assert rows[5]["amp_overflows"] >= 1 and rows[5]["nonfinite_skips"] == 0
    saved_scale = scaler.get_scale()
    assert saved_scale < 65536.0  # the initial scale: the overflow lowered it
    ckpt = torch.load(tmp_path / "model_final.pth", weights_only=True)
    assert ckpt["trainer"]["_trainer"]["grad_scaler"]["scale"] == saved_scale
    assert "optimizer" in ckpt["trainer"]["_trainer"]  # detectron2 0.6 alone would not save it

    resumed = TinyTrainer(tiny_cfg(tmp_path, *opts))
    assert resumed._trainer.grad_scaler.get_scale() == 65536.0
    resumed.resume_or_load(resume=True)
    assert resumed._trainer.grad_scaler.get_scale() == saved_scale
    assert resumed.start_iter == 6


@pytest.mark.filterwarnings("ignore:Detected call of `lr_scheduler.step\\(\\)` before:UserWarning")
@pytest.mark.filterwarnings("ignore:Seems like `optimizer.step\\(\\)` has been overridden:UserWarning")
def test_oom_in_the_optimizer_step_under_a_grad_scaler_is_retried(tmp_path):
    """The scaler has unscaled the gradients when AdamW's first step (allocating its moments) fails."""
    cfg = tiny_cfg(tmp_path, "SOLVER.AMP.ENABLED", True, "SOLVER.AMP.PRECISION", "float16", "SOLVER.MAX_ITER", 3)
    seed_all_rng(0)
    trainer = TinyTrainer(cfg)
    step, calls = trainer.optimizer.step, []

    def failing_step(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 1.00 GiB")
        return step(*args, **kwargs)

    trainer.optimizer.step = failing_step
    trainer.train()
    assert trainer.iter == 3
    assert trainer._trainer.counters["oom_retries"] == 1
