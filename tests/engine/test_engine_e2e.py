"""End to end: tools/train_net.py in subprocesses; training killed at random instants and resumed."""
import json
import multiprocessing
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from detectron2.utils.env import seed_all_rng

from tests.engine.tiny_engine import TinyTrainer, resume_and_train, tiny_cfg

ROOT = Path(__file__).resolve().parents[2]
TINY_TRAIN_NET = ROOT / "tests" / "engine" / "tiny_train_net.py"


def _run_train_net(config, *args):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    proc = subprocess.run(
        [sys.executable, str(TINY_TRAIN_NET), "--config-file", str(config), *args],
        env=env, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout + proc.stderr


@pytest.mark.slow
def test_train_net_trains_resumes_and_evaluates(tmp_path):
    out = tmp_path / "out"
    config = tmp_path / "tiny.yaml"
    config.write_text(tiny_cfg(out).dump())

    log = _run_train_net(config, "SOLVER.MAX_ITER", "6")
    assert "Starting training from iteration 0" in log
    assert (out / "model_final.pth").is_file() and (out / "config.yaml").is_file()

    log = _run_train_net(config, "--resume")  # MAX_ITER 12 from the file
    assert "Starting training from iteration 6" in log
    final = torch.load(out / "model_final.pth", weights_only=True)
    assert final["iteration"] == 11

    log = _run_train_net(config, "--eval-only", "MODEL.WEIGHTS", str(out / "model_final.pth"))
    assert "copypaste: 3.0000" in log  # the tiny evaluator saw the 3 test images
    assert "Starting training" not in log


def _assert_checkpoints_load(folder: Path):
    """Every checkpoint file on disk is complete, and last_checkpoint names an existing one."""
    files = sorted(folder.glob("*.pth"))
    for f in files:
        ckpt = torch.load(f, weights_only=True)
        assert "model" in ckpt and "_trainer" in ckpt["trainer"], f
    tag = folder / "last_checkpoint"
    if tag.exists():
        assert (folder / tag.read_text()).is_file(), tag.read_text()
    return len(files)


def _last_checkpoint_iteration(folder: Path) -> int:
    """The iteration in the name of the checkpoint ``last_checkpoint`` points to (-1 before the first one)."""
    tag = folder / "last_checkpoint"
    name = tag.read_text() if tag.exists() else ""
    digits = "".join(c for c in name if c.isdigit())
    return int(digits) if digits else -1


@pytest.mark.slow
def test_training_survives_20_random_sigkills(tmp_path):
    opts = ("SOLVER.MAX_ITER", 60, "SOLVER.STEPS", (40,), "SOLVER.CHECKPOINT_PERIOD", 1,
            "SOLVER.MAX_CHECKPOINTS_TO_KEEP", 3, "SOLVER.LOG_PERIOD", 5)
    cfg = tiny_cfg(tmp_path / "killed", *opts)
    # forkserver children start in milliseconds (the server imported torch/detectron2 once) and,
    # unlike fork from this process, never inherit a running OpenMP thread pool.
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["tests.engine.tiny_engine"])
    rng = random.Random(0)
    progress = []
    for _ in range(20):
        life = ctx.Process(target=resume_and_train, args=(cfg,))
        life.start()
        # Kill after a random number of new checkpoints plus a random fraction of a step, so the kills land
        # during training (anywhere, saves included) however fast this machine runs the tiny task.
        target = _last_checkpoint_iteration(tmp_path / "killed") + rng.randint(1, 3)
        deadline = time.time() + 120
        while life.is_alive() and _last_checkpoint_iteration(tmp_path / "killed") < target and time.time() < deadline:
            time.sleep(0.002)
        time.sleep(rng.uniform(0.0, 0.05))
        if life.is_alive():
            os.kill(life.pid, signal.SIGKILL)
        life.join()
        _assert_checkpoints_load(tmp_path / "killed")
        tag = tmp_path / "killed" / "last_checkpoint"
        if tag.exists():
            progress.append(torch.load(tmp_path / "killed" / tag.read_text(), weights_only=True)["iteration"])
    last = ctx.Process(target=resume_and_train, args=(cfg,))
    last.start()
    last.join(timeout=300)
    assert last.exitcode == 0
    assert _assert_checkpoints_load(tmp_path / "killed") <= 4  # 3 kept + model_final
    assert not list((tmp_path / "killed").glob(".*.tmp"))
    assert len(set(progress)) > 3, progress  # the kills did land during training

    # Exact resume makes the 21 lives train exactly like one.
    whole_cfg = tiny_cfg(tmp_path / "whole", *opts)
    seed_all_rng(whole_cfg.SEED)
    whole = TinyTrainer(whole_cfg)
    whole.resume_or_load(resume=False)
    whole.train()
    final = torch.load(tmp_path / "killed" / "model_final.pth", weights_only=True)
    assert final["iteration"] == 59
    for k, v in whole.model.state_dict().items():
        assert torch.equal(final["model"][k], v), k
    # metrics.json holds no torn line and no iteration twice: it reads like the uninterrupted log.
    killed_log, whole_log = (_losses(tmp_path / d / "metrics.json") for d in ("killed", "whole"))
    assert killed_log == whole_log and len(whole_log) == 12


def _losses(path):
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    return [(r["iteration"], r["total_loss"], r["loss_box"]) for r in rows if "total_loss" in r]
