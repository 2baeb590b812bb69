"""tools/inspect_checkpoint.py on a real ests-d2 training checkpoint, a weights-only detectron2 file and
an official-format ESTS checkpoint."""
import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from detectron2.checkpoint import DetectionCheckpointer
from torch import nn

from ests_d2.utils.checkpoint_inspection import describe_checkpoint, load_checkpoint

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def engine_checkpoint(tmp_path_factory):
    """A checkpoint written by the ests-d2 Trainer itself (tiny task of the engine tests), mid-run."""
    from tests.engine.tiny_engine import resume_and_train, tiny_cfg

    out = tmp_path_factory.mktemp("engine")
    resume_and_train(tiny_cfg(out, "SOLVER.MAX_ITER", 4, "SOLVER.CHECKPOINT_PERIOD", 2))
    return out / "model_0000001.pth"


def test_engine_checkpoint_resumes_exactly(engine_checkpoint):
    summary = describe_checkpoint(load_checkpoint(str(engine_checkpoint)))
    assert summary["format"] == "ests-d2 / detectron2 checkpoint"
    assert summary["iteration"] == 1 and summary["epoch"] is None
    assert summary["optimizer"]["where"] == "trainer._trainer.optimizer"
    assert summary["optimizer"]["type"] == "AdamW"
    assert summary["optimizer"]["steps_taken"] == 2  # iterations 0 and 1
    assert len(summary["optimizer"]["learning_rates"]) == 2  # backbone and the rest
    # the tiny net: conv 3->8 (224), conv 8->8 (584), linear 8->4 (36); all trainable
    assert summary["parameters_and_buffers"] == summary["trainable_parameters"] == 224 + 584 + 36
    assert summary["scheduler"]["where"] == "trainer.hooks.LRScheduler"
    assert summary["rng_states"] == ["numpy", "python", "torch"]
    assert summary["data_position_batches"] == 2 and summary["data_seed"] == 7 and summary["dataset_size"] == 12
    assert summary["skip_counters"]["nonfinite_skips"] == 0
    assert summary["resume"] == "yes: --resume continues exactly after iteration 1"


def test_cli_prints_json_and_text(engine_checkpoint):
    env = dict(os.environ, PYTHONPATH=str(REPO))
    tool = [sys.executable, str(REPO / "tools" / "inspect_checkpoint.py"), str(engine_checkpoint)]
    as_json = subprocess.run(tool + ["--json"], capture_output=True, text=True, env=env, cwd=REPO)
    assert as_json.returncode == 0, as_json.stderr
    assert json.loads(as_json.stdout)["iteration"] == 1
    as_text = subprocess.run(tool, capture_output=True, text=True, env=env, cwd=REPO)
    assert as_text.returncode == 0, as_text.stderr
    assert "resume" in as_text.stdout and "yes: --resume continues exactly" in as_text.stdout


def test_weights_only_detectron2_file_cannot_resume(tmp_path):
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
    DetectionCheckpointer(model, save_dir=str(tmp_path)).save("weights")
    summary = describe_checkpoint(load_checkpoint(str(tmp_path / "weights.pth")))
    assert summary["iteration"] is None and summary["optimizer"] is None
    assert summary["parameters_and_buffers"] == 16 + 4 * 4  # linear + BN weight, bias, running mean / var
    assert summary["resume"].startswith("no: weights only")


def test_ests_d2_weights_are_not_mistaken_for_official_ones(tmp_path):
    """Our ESTS shares the official transformer names; only the backbone names differ."""
    from detectron2.modeling import build_model

    import ests_d2.modeling  # noqa: F401  (registers the meta-architecture)
    from tests.modeling.model_config import tiny_ests_cfg

    model = build_model(tiny_ests_cfg())
    DetectionCheckpointer(model, save_dir=str(tmp_path)).save("ests_weights")
    summary = describe_checkpoint(load_checkpoint(str(tmp_path / "ests_weights.pth")))
    assert summary["format"] == "ests-d2 / detectron2 checkpoint"
    assert summary["tensors"] == len(model.state_dict())
    assert summary["resume"].startswith("no: weights only")


def test_partial_trainer_state_names_what_is_missing(tmp_path):
    model = nn.Linear(3, 2)
    checkpointer = DetectionCheckpointer(model, save_dir=str(tmp_path))
    checkpointer.save("partial", iteration=41)  # an iteration but no optimizer / scheduler / RNG / data position
    summary = describe_checkpoint(load_checkpoint(str(tmp_path / "partial.pth")))
    assert summary["resume"].startswith("partly: --resume continues at iteration 41 but lacks")
    for missing in ("optimizer state", "LR scheduler", "RNG states", "data position"):
        assert missing in summary["resume"]


def _official_checkpoint(path):
    """The official main.py layout (spec section 10) with official names and one shared head."""
    shared_head = nn.Linear(4, 4)
    backbone_conv = nn.Conv2d(3, 4, 3)
    rest = nn.Linear(4, 2)
    model = {
        "backbone.0.body.conv1.weight": backbone_conv.weight.data,
        "backbone.0.body.bn1.running_mean": torch.zeros(4),
        "transformer.decoder.bbox_embed.0.weight": shared_head.weight.data,
        "bbox_embed.0.weight": shared_head.weight.data,  # alias: the same storage under two names
        "transformer.decoder.bbox_embed.0.bias": shared_head.bias.data,
        "class_embed.0.weight": rest.weight.data,
    }
    optimizer = torch.optim.AdamW(
        [{"params": [shared_head.weight, shared_head.bias, rest.weight]},
         {"params": [backbone_conv.weight], "lr": 1e-5}],
        lr=1e-4, weight_decay=1e-4,
    )
    loss = shared_head(torch.ones(1, 4)).sum() + rest.weight.sum() + backbone_conv.weight.sum()
    loss.backward()
    optimizer.step()
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=40)
    args = argparse.Namespace(lr=1e-4, lr_backbone=1e-5, batch_size=8, epochs=140, dataset_file="totaltext",
                              output_dir="out", num_queries=100)
    torch.save({"model": model, "optimizer": optimizer.state_dict(), "lr_scheduler": scheduler.state_dict(),
                "epoch": 139, "args": args}, path)


def test_official_checkpoint_is_recognised_and_not_resumable(tmp_path):
    path = tmp_path / "checkpoint0139.pth"
    _official_checkpoint(path)
    summary = describe_checkpoint(load_checkpoint(str(path)))
    assert summary["format"] == "official ESTS checkpoint"
    assert summary["top_level_keys"] == ["args", "epoch", "lr_scheduler", "model", "optimizer"]
    assert summary["epoch"] == 139 and summary["iteration"] is None
    assert summary["tensors"] == 6
    assert summary["parameters_and_buffers"] == 108 + 4 + 16 + 4 + 8  # the alias is counted once
    assert summary["optimizer"]["where"] == "optimizer"
    assert summary["optimizer"]["learning_rates"] == [1e-4, 1e-5]
    assert summary["optimizer"]["params_per_group"] == [3, 1]
    assert summary["trainable_parameters"] == 16 + 4 + 8 + 108
    assert summary["scheduler"]["where"] == "lr_scheduler"
    assert summary["official_args"] == {"dataset_file": "totaltext", "lr": 1e-4, "lr_backbone": 1e-5,
                                        "batch_size": 8, "epochs": 140, "num_queries": 100}
    assert summary["resume"].startswith("no: an official ESTS checkpoint cannot be resumed here")
    assert "convert_official_weights.py" in summary["resume"]


def test_not_a_checkpoint_is_a_clear_error(tmp_path):
    path = tmp_path / "list.pth"
    torch.save([1, 2, 3], path)
    with pytest.raises(ValueError, match="list.pth: expected a dict at the top level"):
        load_checkpoint(str(path))
    torch.save({"epoch": 3}, path)
    with pytest.raises(ValueError, match="no model weights found"):
        describe_checkpoint(load_checkpoint(str(path)))


def test_cli_names_the_file_on_bad_input(tmp_path):
    path = tmp_path / "opaque.pth"
    # numpy arrays (as in old detectron2 model-zoo files) are pickled objects that weights_only refuses
    torch.save({"model": {"w": np.zeros(3)}}, path)
    env = dict(os.environ, PYTHONPATH=str(REPO))
    tool = [sys.executable, str(REPO / "tools" / "inspect_checkpoint.py")]
    proc = subprocess.run(tool + [str(path)], capture_output=True, text=True, env=env, cwd=REPO)
    assert proc.returncode != 0 and "opaque.pth: holds pickled objects" in proc.stderr
    torch.save({"epoch": 3}, path)
    proc = subprocess.run(tool + [str(path)], capture_output=True, text=True, env=env, cwd=REPO)
    assert proc.returncode == 1  # describe_checkpoint's error, about the contents: the tool names the file
    assert proc.stderr == (f"inspect_checkpoint.py: error: {path}: no model weights found (neither a 'model' entry "
                           "nor a bare state_dict); top-level keys: ['epoch']\n")


# ---------------------------------------------------------------- files that are not complete checkpoints


def _broken_files(folder):
    """name -> (path, expected message) of files a user may point the tool at by mistake or too early."""
    weights = {"model": nn.Linear(30, 20).state_dict(), "iteration": 3}
    torch.save(weights, folder / "good.pth")
    torch.save(weights, folder / "legacy.pth", _use_new_zipfile_serialization=False)
    good, legacy = (folder / "good.pth").read_bytes(), (folder / "legacy.pth").read_bytes()
    noise = bytes(np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8))
    contents = {
        "truncated.pth": (good[: len(good) // 2], "not a complete checkpoint (truncated? still being written?)"),
        "zero.pth": (b"", "is empty (0 bytes), not a complete checkpoint"),
        "random.pth": (b"\x13" + noise, "not a PyTorch checkpoint"),
        "random_zip.pth": (b"PK\x03\x04" + noise, "not a complete checkpoint"),  # torch: OSError [Errno 22]
        "random_pickle.pth": (b"\x80\x02" + noise, "not a complete checkpoint"),  # used to say 'pickled objects'
        "legacy_truncated.pth": (legacy[: len(legacy) // 2], "not a complete checkpoint"),
    }
    for name, (data, _) in contents.items():
        (folder / name).write_bytes(data)
    return {name: (folder / name, expected) for name, (_, expected) in contents.items()}


def test_incomplete_or_foreign_files_get_one_clear_reason(tmp_path):
    for name, (path, expected) in _broken_files(tmp_path).items():
        with pytest.raises(ValueError) as e:
            load_checkpoint(str(path))
        message = str(e.value)
        assert message.startswith(f"{path}: ") and expected in message, (name, message)
        assert "\n" not in message and "pickled objects" not in message, (name, message)
    assert load_checkpoint(str(tmp_path / "legacy.pth"))["iteration"] == 3  # the legacy format still loads


def test_cli_prints_one_line_without_traceback_unless_debug(tmp_path, monkeypatch, capsys):
    import runpy

    broken = _broken_files(tmp_path)
    tool = str(REPO / "tools" / "inspect_checkpoint.py")
    exact = {"truncated.pth": "not a complete checkpoint (truncated? still being written?): its zip archive has no "
                              "central directory at the end",
             "zero.pth": "is empty (0 bytes), not a complete checkpoint (truncated? still being written?)",
             "random.pth": "not a PyTorch checkpoint (neither torch.save's zip archive nor a legacy pickle; it starts "
                           f"with {broken['random.pth'][0].read_bytes()[:4]!r})"}
    for name, message in exact.items():
        monkeypatch.setattr(sys, "argv", [tool, str(broken[name][0])])
        with pytest.raises(SystemExit) as e:
            runpy.run_path(tool, run_name="__main__")
        assert e.value.code == 1
        assert capsys.readouterr().err == f"inspect_checkpoint.py: error: {broken[name][0]}: {message}\n"
    monkeypatch.setattr(sys, "argv", [tool, str(broken["truncated.pth"][0]), "--debug"])
    with pytest.raises(ValueError, match="not a complete checkpoint"):  # --debug: the exception itself
        runpy.run_path(tool, run_name="__main__")
    # the real process: exactly one line on stderr, no traceback
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.run([sys.executable, tool, str(broken["truncated.pth"][0])], capture_output=True, text=True,
                          env=env, cwd=REPO)
    assert proc.returncode == 1 and proc.stdout == ""
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
