"""Unit level: how a changed config on --resume is classified, and which preemption signals are accepted."""
import signal
import sys
from pathlib import Path

import pytest
import torch
import yaml

from ests_d2.engine.preemption import parse_signals
from ests_d2.engine.resume_config import ConfigChangeRefused, resolve_resumed_config
from tests.engine.tiny_engine import tiny_cfg


def _trained_run(tmp_path, drop_key=None):
    """OUTPUT_DIR with a config.yaml and a (minimal) training checkpoint of iteration 3; the yaml to resume with."""
    out = tmp_path / "out"
    out.mkdir()
    saved = yaml.safe_load(tiny_cfg(out).dump())
    if drop_key:
        section, key = drop_key.split(".")
        del saved[section][key]
    (out / "config.yaml").write_text(yaml.safe_dump(saved))
    torch.save({"model": {}, "trainer": {}, "iteration": 3}, out / "model_0000003.pth")
    (out / "last_checkpoint").write_text("model_0000003.pth")
    config = tmp_path / "tiny.yaml"
    config.write_text(tiny_cfg(out).dump())
    return config


def test_unchanged_config_and_keys_new_to_the_code_at_their_default_pass(tmp_path):
    config = _trained_run(tmp_path, drop_key="SOLVER.PREEMPT_SIGNALS")  # a run saved before the key existed
    assert resolve_resumed_config(str(config), [], allow_changes=False) == []


def test_a_restored_key_is_refused_or_pinned_to_the_saved_value(tmp_path):
    config = _trained_run(tmp_path)
    with pytest.raises(ConfigChangeRefused, match=r"SEED: 7 -> 8: would not take effect"):
        resolve_resumed_config(str(config), ["SEED", 8], allow_changes=False)
    assert resolve_resumed_config(str(config), ["SEED", 8], allow_changes=True) == ["SEED", 8, "SEED", 7]
    assert not list((tmp_path / "out").glob("config_until_iter_*"))  # nothing new took effect


def test_an_exactness_change_allowed_keeps_the_previous_config(tmp_path):
    config = _trained_run(tmp_path)
    with pytest.raises(ConfigChangeRefused, match=r"Refused \(INPUT.MIN_SIZE_TRAIN\)"):
        resolve_resumed_config(str(config), ["INPUT.MIN_SIZE_TRAIN", (16,)], allow_changes=False)
    assert resolve_resumed_config(str(config), ["INPUT.MIN_SIZE_TRAIN", (16,)], allow_changes=True)
    kept = yaml.safe_load((tmp_path / "out" / "config_until_iter_0000003.yaml").read_text())
    assert kept["INPUT"]["MIN_SIZE_TRAIN"] == [16, 20, 24]


def test_bookkeeping_changes_pass_without_the_flag(tmp_path):
    config = _trained_run(tmp_path)
    opts = ["SOLVER.CHECKPOINT_PERIOD", 5, "TEST.EVAL_PERIOD", 2, "DATALOADER.NUM_WORKERS", 2]
    assert resolve_resumed_config(str(config), opts, allow_changes=False) == opts


def test_an_unreadable_saved_config_is_named(tmp_path):
    config = _trained_run(tmp_path)
    (tmp_path / "out" / "config.yaml").write_text("SOLVER: [unclosed")
    with pytest.raises(ConfigChangeRefused, match=r"config.yaml: unreadable"):
        resolve_resumed_config(str(config), [], allow_changes=False)


def test_train_net_refuses_with_an_error_line_and_exit_status_2(tmp_path, monkeypatch, capsys):
    config = _trained_run(tmp_path)
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[2] / "tools"))
    import train_net

    monkeypatch.setattr(sys, "argv", ["train_net.py", "--config-file", str(config), "--resume", "SEED", "8"])
    with pytest.raises(SystemExit) as e:  # refused before any process starts
        train_net.invoke_main()
    assert e.value.code == 2
    assert capsys.readouterr().err.splitlines() == [
        f"train_net.py: error: --resume with a config that differs from {tmp_path / 'out' / 'config.yaml'} in 1 "
        "key(s):",
        "  SEED: 7 -> 8: would not take effect (the checkpoint restores it): kept at the saved value",
        "Refused (SEED); pass --allow-config-change to resume anyway with the effects listed, or train in a new "
        "OUTPUT_DIR with MODEL.WEIGHTS set to the checkpoint.",
    ]


def test_preemption_signals_are_parsed_and_bad_names_rejected():
    assert parse_signals(["SIGTERM", "sigusr1"]) == [signal.SIGTERM, signal.SIGUSR1]
    for bad in ("SIGFOO", "SIGKILL"):
        with pytest.raises(ValueError, match=f"SOLVER.PREEMPT_SIGNALS: '{bad}'"):
            parse_signals([bad])
