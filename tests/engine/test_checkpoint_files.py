"""Unit tests of engine/checkpoint.py that need no training run: which file ``--resume`` picks, the
out-of-schedule checkpoint of a preemption, file permissions and the RNG state round trip.

The subprocess tests (test_engine_resume_edges, test_engine_preemption) check the same behaviour end to
end but take minutes; these take milliseconds, so mutation testing can run them for every mutant.
"""
import logging
import os
import random
import re
import stat
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

from ests_d2.engine import AtomicDetectionCheckpointer, PeriodicCheckpointer
from ests_d2.engine.checkpoint import atomic_write, capture_rng_state, find_resume_checkpoint, restore_rng_state


def messages_of(caplog):
    return [r.getMessage() for r in caplog.records]


def _training_checkpoint(path, iteration):
    torch.save({"model": {}, "trainer": {}, "iteration": iteration}, path)


def _tag(folder, name):
    (folder / "last_checkpoint").write_text(name)


def test_resume_uses_the_tagged_file_when_it_exists(tmp_path):
    _training_checkpoint(tmp_path / "model_0000009.pth", 9)
    _training_checkpoint(tmp_path / "model_0000004.pth", 4)
    _tag(tmp_path, "model_0000004.pth\n")  # a trailing newline is not part of the name
    assert find_resume_checkpoint(str(tmp_path)) == str(tmp_path / "model_0000004.pth")


def test_resume_without_a_folder_or_a_checkpoint_finds_nothing(tmp_path):
    assert find_resume_checkpoint(str(tmp_path / "absent")) is None
    assert find_resume_checkpoint(str(tmp_path)) is None


def test_stale_tag_falls_back_to_the_newest_loadable_checkpoint_in_order(tmp_path, caplog):
    for iteration in (4, 19, 9):  # written out of order: the iteration in the name decides, not the age
        _training_checkpoint(tmp_path / f"model_{iteration:07d}.pth", iteration)
    (tmp_path / "model_0000029.pth").write_bytes(b"truncated")  # newest name, does not load
    torch.save({"model": {}}, tmp_path / "model_0000024.pth")  # loads, but not a training checkpoint
    _training_checkpoint(tmp_path / ".model_0000039.pth", 39)  # hidden: a temporary name, never resumed
    _training_checkpoint(tmp_path / "model_0000034.pt", 34)  # not a .pth file
    _training_checkpoint(tmp_path / "renamed.pth", 99)  # other names rank below the periodic ones
    _tag(tmp_path, "model_0000049.pth")  # deleted
    with caplog.at_level(logging.WARNING, logger="ests_d2.engine.checkpoint"):
        assert find_resume_checkpoint(str(tmp_path)) == str(tmp_path / "model_0000019.pth")
    assert (f"In {tmp_path} last_checkpoint names model_0000049.pth, which does not exist: resuming from "
            "model_0000019.pth (iteration 19), the newest checkpoint there that loads.") in messages_of(caplog)
    messages = messages_of(caplog)
    unloadable = next(m for m in messages if "model_0000029.pth" in m)
    why = re.fullmatch(re.escape(f"Not resuming from {tmp_path / 'model_0000029.pth'}: it does not load (") +
                       r"(\w+): (.+)\)", unloadable, re.S)
    assert why and why.group(1) not in ("None", "NoneType") and why.group(2) != "None", unloadable
    assert (f"Not resuming from {tmp_path / 'model_0000024.pth'}: not a training checkpoint "
            "(no model/trainer/iteration)") in messages


def test_model_final_ranks_first_and_other_names_by_age(tmp_path, caplog):
    _training_checkpoint(tmp_path / "old.pth", 1)
    _training_checkpoint(tmp_path / "new.pth", 2)
    os.utime(tmp_path / "old.pth", (1_000_000, 1_000_000))
    os.utime(tmp_path / "new.pth", (2_000_000, 2_000_000))
    with caplog.at_level(logging.WARNING, logger="ests_d2.engine.checkpoint"):
        assert find_resume_checkpoint(str(tmp_path)) == str(tmp_path / "new.pth")
    assert messages_of(caplog) == [f"In {tmp_path} there is no last_checkpoint: resuming from new.pth (iteration 2), "
                                   "the newest checkpoint there that loads."]
    _training_checkpoint(tmp_path / "model_0000000.pth", 0)  # older than new.pth, but a periodic name
    os.utime(tmp_path / "model_0000000.pth", (500_000, 500_000))
    assert find_resume_checkpoint(str(tmp_path)) == str(tmp_path / "model_0000000.pth")
    _training_checkpoint(tmp_path / "model_0000007.pth", 7)
    _training_checkpoint(tmp_path / "model_final.pth", 7)
    assert find_resume_checkpoint(str(tmp_path)) == str(tmp_path / "model_final.pth")


def test_only_visible_pth_files_are_candidates(tmp_path):
    _training_checkpoint(tmp_path / ".model_0000003.pth", 3)  # a hidden (temporary) name
    _training_checkpoint(tmp_path / "model_0000005.pt", 5)
    _tag(tmp_path, "model_0000009.pth")
    assert find_resume_checkpoint(str(tmp_path)) is None


def test_stale_tag_and_nothing_loadable_is_logged_and_finds_nothing(tmp_path, caplog):
    (tmp_path / "model_0000004.pth").write_bytes(b"x")
    _tag(tmp_path, "model_0000009.pth")
    with caplog.at_level(logging.WARNING, logger="ests_d2.engine.checkpoint"):
        assert find_resume_checkpoint(str(tmp_path)) is None
    assert (f"In {tmp_path} last_checkpoint names model_0000009.pth, which does not exist, and no other checkpoint "
            "loads: nothing to resume from.") in messages_of(caplog)


class _Counter:
    """Stands in for the trainer state that makes a file a training checkpoint."""

    def state_dict(self):
        return {"count": 1}

    def load_state_dict(self, state):
        assert state == {"count": 1}


def test_checkpointer_resumes_from_the_fallback_and_retags_it(tmp_path):
    model = nn.Linear(2, 2)
    writer = AtomicDetectionCheckpointer(model, str(tmp_path), trainer=_Counter())
    writer.save("model_0000003", iteration=3)
    with torch.no_grad():
        model.weight.fill_(7.0)
    writer.save("model_0000005", iteration=5)
    _tag(tmp_path, "model_0000008.pth")  # the file it names was deleted
    reader = AtomicDetectionCheckpointer(nn.Linear(2, 2), str(tmp_path), trainer=_Counter())
    assert not reader.has_checkpoint()
    extra = reader.resume_or_load("unused.pth", resume=True)
    assert extra["iteration"] == 5 and torch.equal(reader.model.weight, torch.full((2, 2), 7.0))
    assert reader.resumed_file == str(tmp_path / "model_0000005.pth")
    assert (tmp_path / "last_checkpoint").read_text() == "model_0000005.pth"
    assert reader.has_checkpoint()


def test_checkpoint_files_are_readable_by_others(tmp_path):
    atomic_write(str(tmp_path / "a.pth"), lambda f: f.write(b"x"))
    assert stat.S_IMODE(os.stat(tmp_path / "a.pth").st_mode) == 0o644
    assert os.listdir(tmp_path) == ["a.pth"]


def _hook(tmp_path, period=5, max_to_keep=None, max_iter=20):
    hook = PeriodicCheckpointer(AtomicDetectionCheckpointer(nn.Linear(1, 1), str(tmp_path)), period,
                                max_to_keep=max_to_keep)
    hook.trainer = SimpleNamespace(max_iter=max_iter)
    hook.before_train()
    return hook


def test_save_now_writes_the_current_iteration_unless_the_schedule_does(tmp_path):
    hook = _hook(tmp_path)
    assert hook.save_now(18) == str(tmp_path / "model_0000018.pth")  # the second-last iteration is not the last
    (tmp_path / "model_0000018.pth").unlink()
    assert hook.save_now(6) == str(tmp_path / "model_0000006.pth")
    assert torch.load(tmp_path / "model_0000006.pth", weights_only=True)["iteration"] == 6
    assert (tmp_path / "last_checkpoint").read_text() == "model_0000006.pth"
    # iteration 9 is on the schedule ((9 + 1) % 5 == 0) and 19 is the last one: their files are not rewritten
    assert hook.save_now(9) == str(tmp_path / "model_0000009.pth")
    assert hook.save_now(19) == str(tmp_path / "model_final.pth")
    assert hook.save_now(25) == str(tmp_path / "model_final.pth")
    assert sorted(os.listdir(tmp_path)) == ["last_checkpoint", "model_0000006.pth"]


def test_save_now_keeps_the_configured_number_of_checkpoints(tmp_path):
    hook = _hook(tmp_path, max_to_keep=2)
    for iteration in (1, 2, 3):
        hook.save_now(iteration)
    assert sorted(os.listdir(tmp_path)) == ["last_checkpoint", "model_0000002.pth", "model_0000003.pth"]
    assert hook.recent_checkpoints == [str(tmp_path / "model_0000002.pth"), str(tmp_path / "model_0000003.pth")]


def test_before_train_keeps_exactly_max_to_keep_files(tmp_path):
    for i in (4, 9):
        (tmp_path / f"model_{i:07d}.pth").write_bytes(b"x")
    (tmp_path / "other_0000001.pth").write_bytes(b"x")  # another prefix is not this hook's
    hook = _hook(tmp_path, max_to_keep=2)
    assert sorted(os.listdir(tmp_path)) == ["model_0000004.pth", "model_0000009.pth", "other_0000001.pth"]
    assert hook.recent_checkpoints == [str(tmp_path / "model_0000004.pth"), str(tmp_path / "model_0000009.pth")]
    assert _hook(tmp_path).recent_checkpoints == []  # without max_to_keep nothing is counted or deleted


def test_rng_state_round_trip_restores_every_generator():
    random.seed(1)
    np.random.seed(2)
    torch.manual_seed(3)
    np.random.standard_normal()  # leaves a cached Gaussian in numpy's state
    state = capture_rng_state()
    expected = (random.random(), np.random.standard_normal(), np.random.rand(), torch.rand(2))
    random.seed(9)
    np.random.seed(9)
    torch.manual_seed(9)
    # through a checkpoint: only plain values survive weights_only loading
    restore_rng_state(state)
    again = (random.random(), np.random.standard_normal(), np.random.rand(), torch.rand(2))
    assert again[:3] == expected[:3] and torch.equal(again[3], expected[3])


def test_rng_state_survives_a_weights_only_checkpoint(tmp_path):
    state = capture_rng_state()
    torch.save({"rng": state}, tmp_path / "s.pth")
    loaded = torch.load(tmp_path / "s.pth", weights_only=True)["rng"]
    draws = (random.random(), float(np.random.rand()), torch.rand(1).item())
    restore_rng_state(loaded)
    assert (random.random(), float(np.random.rand()), torch.rand(1).item()) == draws


@pytest.mark.parametrize("stored_devices", [0, 1, 2])
def test_cuda_rng_states_are_restored_only_for_the_same_device_count(monkeypatch, caplog, stored_devices):
    restored = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "set_rng_state_all", restored.append)
    state = {**capture_rng_state(), "cuda": ["state"] * stored_devices}
    if not stored_devices:  # a checkpoint written without CUDA, resumed where CUDA is available
        del state["cuda"]
    with caplog.at_level(logging.WARNING, logger="ests_d2.engine.checkpoint"):
        restore_rng_state(state)
    if stored_devices == 1:
        assert restored == [["state"]] and not caplog.text
    else:
        assert restored == []
        expected = [] if not stored_devices else [
            "Checkpoint holds CUDA RNG states of 2 devices, this process sees 1: not restored."]
        assert messages_of(caplog) == expected


def test_only_hidden_temporary_files_are_removed_as_stale(tmp_path, caplog):
    for name in (".model_0000003.pth.x1.tmp", ".last_checkpoint.x2.tmp"):  # what atomic_write leaves when killed
        (tmp_path / name).write_bytes(b"partial")
    for name in (".keep", "notes.tmp", "model_0000003.pth"):  # hidden but not temporary; temporary but not ours
        (tmp_path / name).write_bytes(b"x")
    with caplog.at_level(logging.INFO, logger="ests_d2.engine.checkpoint"):
        assert AtomicDetectionCheckpointer(nn.Linear(1, 1), str(tmp_path)).remove_stale_temp_files() == 2
    assert sorted(os.listdir(tmp_path)) == [".keep", "model_0000003.pth", "notes.tmp"]
    assert [r.getMessage() for r in caplog.records] == [f"Removed 2 incomplete checkpoint file(s) in {tmp_path}"]


def test_removing_stale_files_of_a_missing_folder_removes_nothing(tmp_path):
    assert AtomicDetectionCheckpointer(nn.Linear(1, 1), str(tmp_path / "absent")).remove_stale_temp_files() == 0
    assert AtomicDetectionCheckpointer(nn.Linear(1, 1), "").remove_stale_temp_files() == 0


class _NotAWeight:
    """Any object that ``torch.load(weights_only=True)`` refuses to unpickle."""


def test_a_checkpoint_that_needs_arbitrary_unpickling_is_not_resumed_from(tmp_path):
    _training_checkpoint(tmp_path / "model_0000004.pth", 4)
    torch.save({"model": {}, "trainer": {}, "iteration": 9, "extra": _NotAWeight()}, tmp_path / "model_0000009.pth")
    assert find_resume_checkpoint(str(tmp_path)) == str(tmp_path / "model_0000004.pth")

