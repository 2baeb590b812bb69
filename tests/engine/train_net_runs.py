"""Run the tiny ``tools/train_net.py`` in a subprocess, and compare a run with an uninterrupted one."""
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import torch
from detectron2.utils.env import seed_all_rng

from tests.engine.tiny_engine import TinyTrainer, tiny_cfg

ROOT = Path(__file__).resolve().parents[2]
TINY_TRAIN_NET = ROOT / "tests" / "engine" / "tiny_train_net.py"
TIMEOUT = 300
TIMINGS = ("time", "data_time", "eta_seconds", "rss_mb")  # differ between any two runs


class TrainNet:
    """``tiny_train_net.py`` running in a subprocess, its output going to a file (a pipe nobody reads
    would fill up and block it)."""

    def __init__(self, config: Path, *args, **env_vars):
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
        env.update({k: str(v) for k, v in env_vars.items()})
        self.log_path = config.parent / f"log_{time.monotonic_ns()}.txt"
        with open(self.log_path, "w") as log:
            self.proc = subprocess.Popen(
                [sys.executable, str(TINY_TRAIN_NET), "--config-file", str(config), *args],
                env=env, stdout=log, stderr=subprocess.STDOUT,
            )

    def log(self) -> str:
        return self.log_path.read_text()

    def wait(self):
        """(exit code, output)."""
        self.proc.wait(timeout=TIMEOUT)
        return self.proc.returncode, self.log()

    def signal_when(self, condition, sig, what):
        """Send ``sig`` once ``condition()`` holds; return (exit code, output)."""
        deadline = time.time() + TIMEOUT
        while not condition():
            assert self.proc.poll() is None, f"the run ended before {what}:\n{self.log()[-3000:]}"
            assert time.time() < deadline, f"timed out waiting for {what}"
            time.sleep(0.01)
        self.proc.send_signal(sig)
        return self.wait()


def run_to_end(config: Path, *args):
    code, log = TrainNet(config, *args).wait()
    assert code == 0, log[-3000:]
    return log


def metric_rows(folder: Path):
    path = folder / "metrics.json"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def logged_iterations(folder: Path):
    return [r["iteration"] for r in metric_rows(folder) if "total_loss" in r]


def uninterrupted(tmp_path: Path, *opts):
    """The reference: the same config trained in one go (in this process, seeded like train_net)."""
    cfg = tiny_cfg(tmp_path / "whole", *opts)
    seed_all_rng(cfg.SEED)
    trainer = TinyTrainer(cfg)
    trainer.resume_or_load(resume=False)
    trainer.train()
    return trainer.model.state_dict(), tmp_path / "whole"


def _values(rows):
    """(iteration, key) -> value of every logged value but timings; fails on a value logged twice."""
    out = {}
    for row in rows:
        for key, value in row.items():
            if key != "iteration" and key not in TIMINGS:
                assert (row["iteration"], key) not in out, f"iteration {row['iteration']} {key} logged twice"
                out[row["iteration"], key] = value
    return out


def assert_same_run(folder: Path, reference):
    """The run in ``folder`` ended with the reference's weights and logged exactly its values."""
    weights, reference_folder = reference
    final = torch.load(folder / "model_final.pth", weights_only=True)
    for k, v in weights.items():
        assert torch.equal(final["model"][k], v), k
    assert _values(metric_rows(folder)) == _values(metric_rows(reference_folder))


def write_config(tmp_path: Path, *opts) -> Path:
    config = tmp_path / "tiny.yaml"
    config.write_text(tiny_cfg(tmp_path / "out", *opts).dump())
    return config
