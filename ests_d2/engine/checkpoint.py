"""Crash-safe checkpoints and the RNG state that makes a resumed run bitwise identical.

A checkpoint is first written to a hidden temporary file in the same folder, flushed and fsynced,
then renamed over its final name with ``os.replace`` (atomic on POSIX); ``last_checkpoint`` is
only re-tagged afterwards, the same way. A process killed at any instant therefore leaves either
the previous complete checkpoint or the new complete one, never a truncated file that
``last_checkpoint`` points to. Everything saved is plain tensors / numbers / strings, so the files
load with ``torch.load(weights_only=True)``.

``--resume`` trusts ``last_checkpoint`` only when the file it names exists. When it names a missing file
(deleted, a disk cleaned up) or is missing itself (a run killed between its first checkpoint's rename and
the tag), :func:`find_resume_checkpoint` falls back to the newest checkpoint in the folder that loads.
"""
import logging
import os
import random
import re
import shutil
import tempfile
from typing import Callable, Dict, IO

import numpy as np
import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.engine import hooks
from detectron2.utils import comm

__all__ = [
    "AtomicDetectionCheckpointer",
    "PeriodicCheckpointer",
    "atomic_write",
    "capture_rng_state",
    "find_resume_checkpoint",
    "restore_rng_state",
]

logger = logging.getLogger(__name__)

_TEMP_SUFFIX = ".tmp"
_TAG = "last_checkpoint"
_PERIODIC_NAME = re.compile(r"model_(\d{7})\.pth")


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: str, write: Callable[[IO[bytes]], None]) -> None:
    """Write ``path`` through ``write(binary_file)`` so that readers see the old or the whole new file."""
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=folder, prefix="." + os.path.basename(path) + ".", suffix=_TEMP_SUFFIX)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; checkpoints are ordinary readable files
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    _fsync_dir(folder)  # make the rename itself durable


def _tagged_name(save_dir: str) -> str:
    try:
        with open(os.path.join(save_dir, _TAG)) as f:
            return f.read().strip()
    except FileNotFoundError:
        return ""


def _training_checkpoint_iteration(path: str):
    """The iteration stored in ``path`` if it is a complete training checkpoint that loads, else None."""
    try:
        # mmap: the tensors are not read, yet a truncated or corrupt file fails here.
        ckpt = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as e:  # noqa: B902 - any reason a file does not load disqualifies it
        logger.warning("Not resuming from %s: it does not load (%s: %s)", path, type(e).__name__, e)
        return None
    if not isinstance(ckpt, dict) or not {"model", "trainer", "iteration"} <= ckpt.keys():
        logger.warning("Not resuming from %s: not a training checkpoint (no model/trainer/iteration)", path)
        return None
    return int(ckpt["iteration"])


def _newest_loadable_checkpoint(save_dir: str):
    """(path, iteration) of the newest complete training checkpoint in ``save_dir``, or None."""
    names = [f for f in os.listdir(save_dir) if f.endswith(".pth") and not f.startswith(".")]

    def newest_first(name):  # model_final, then model_NNNNNNN by iteration, then other names by age
        match = _PERIODIC_NAME.fullmatch(name)
        rank = 2 if name == "model_final.pth" else 1 if match else 0
        return (rank, int(match.group(1)) if match else 0, os.path.getmtime(os.path.join(save_dir, name)))

    for name in sorted(names, key=newest_first, reverse=True):
        iteration = _training_checkpoint_iteration(os.path.join(save_dir, name))
        if iteration is not None:
            return os.path.join(save_dir, name), iteration
    return None


def find_resume_checkpoint(save_dir: str):
    """The checkpoint ``--resume`` continues from: the file ``last_checkpoint`` names if it exists, else the
    newest loadable training checkpoint in ``save_dir`` (logged), else None (nothing to resume)."""
    if not os.path.isdir(save_dir):
        return None
    tagged = _tagged_name(save_dir)
    if tagged and os.path.isfile(os.path.join(save_dir, tagged)):
        return os.path.join(save_dir, tagged)
    found = _newest_loadable_checkpoint(save_dir)
    why = f"{_TAG} names {tagged}, which does not exist" if tagged else f"there is no {_TAG}"
    if found is None:
        if tagged:
            logger.warning("In %s %s, and no other checkpoint loads: nothing to resume from.", save_dir, why)
        return None
    logger.warning(
        "In %s %s: resuming from %s (iteration %d), the newest checkpoint there that loads.",
        save_dir, why, os.path.basename(found[0]), found[1],
    )
    return found[0]


class AtomicDetectionCheckpointer(DetectionCheckpointer):
    """``DetectionCheckpointer`` whose checkpoint files and ``last_checkpoint`` tag are written atomically,
    and whose resume falls back to the newest loadable checkpoint when the tag is stale or missing."""

    resumed_file = None  # the checkpoint the last ``resume_or_load(resume=True)`` loaded, if any

    def _is_local(self) -> bool:
        return "://" not in self.save_dir

    def has_checkpoint(self) -> bool:
        if not self._is_local():
            return super().has_checkpoint()
        tagged = _tagged_name(self.save_dir)
        return bool(tagged) and os.path.isfile(os.path.join(self.save_dir, tagged))

    def resume_or_load(self, path: str, *, resume: bool = True):
        if not (resume and self._is_local()):
            self.resumed_file = self.get_checkpoint_file() if resume and self.has_checkpoint() else None
            return super().resume_or_load(path, resume=resume)
        found = find_resume_checkpoint(self.save_dir)
        self.resumed_file = found
        if found is None:
            return self.load(path, checkpointables=[])
        if comm.is_main_process() and os.path.basename(found) != _tagged_name(self.save_dir):
            self.tag_last_checkpoint(os.path.basename(found))  # later resumes and tools see the same file
        return self.load(found)

    def save(self, name: str, **kwargs) -> None:
        if not self.save_dir or not self.save_to_disk:
            return
        if not self._is_local():  # remote stores have no atomic rename; keep fvcore's behaviour
            return super().save(name, **kwargs)
        data = {"model": self.model.state_dict()}
        for key, obj in self.checkpointables.items():
            data[key] = obj.state_dict()
        data.update(kwargs)
        basename = f"{name}.pth"
        save_file = os.path.join(self.save_dir, basename)
        self.logger.info("Saving checkpoint to {}".format(save_file))
        os.makedirs(self.save_dir, exist_ok=True)
        atomic_write(save_file, lambda f: torch.save(data, f))
        self.tag_last_checkpoint(basename)

    def tag_last_checkpoint(self, last_filename_basename: str) -> None:
        if not self._is_local():
            return super().tag_last_checkpoint(last_filename_basename)
        atomic_write(
            os.path.join(self.save_dir, _TAG),
            lambda f: f.write(last_filename_basename.encode()),
        )

    def remove_stale_temp_files(self) -> int:
        """Delete temporary files left by a process killed while saving; returns how many."""
        if not self.save_dir or not self._is_local() or not os.path.isdir(self.save_dir):
            return 0
        stale = [
            f for f in os.listdir(self.save_dir) if f.startswith(".") and f.endswith(_TEMP_SUFFIX)
        ]
        for f in stale:
            os.unlink(os.path.join(self.save_dir, f))
        if stale:
            logger.info("Removed %d incomplete checkpoint file(s) in %s", len(stale), self.save_dir)
        return len(stale)


class PeriodicCheckpointer(hooks.PeriodicCheckpointer):
    """detectron2's periodic checkpoint hook that also counts checkpoints written before a resume.

    fvcore only remembers the checkpoints written by the current process (and deletes one old file
    per new one), so with ``max_to_keep`` a run resumed many times would keep every file from its
    earlier lives, plus one per kill that fell between writing a file and deleting the oldest.
    """

    def before_train(self):
        super().before_train()
        if self.max_to_keep is None or not os.path.isdir(self.checkpointer.save_dir):
            return
        pattern = re.compile(re.escape(self.file_prefix) + r"_\d{7}\.pth")
        existing = sorted(f for f in os.listdir(self.checkpointer.save_dir) if pattern.fullmatch(f))
        paths = [os.path.join(self.checkpointer.save_dir, f) for f in existing]
        excess = max(0, len(paths) - self.max_to_keep)
        for path in paths[:excess]:  # oldest first; last_checkpoint names the newest
            os.unlink(path)
        self.recent_checkpoints = paths[excess:]

    def save_now(self, iteration: int) -> str:
        """Checkpoint ``iteration`` outside the schedule (on a preemption signal), unless the schedule
        has just done so; returns the file that holds it."""
        if iteration >= self.max_iter - 1:
            return os.path.join(self.checkpointer.save_dir, f"{self.file_prefix}_final.pth")
        name = f"{self.file_prefix}_{iteration:07d}"
        path = os.path.join(self.checkpointer.save_dir, name + ".pth")
        if (iteration + 1) % self.period == 0:
            return path
        self.checkpointer.save(name, iteration=iteration)
        if self.max_to_keep is not None:  # the same retention as the scheduled checkpoints
            self.recent_checkpoints.append(path)
            while len(self.recent_checkpoints) > self.max_to_keep:
                oldest = self.recent_checkpoints.pop(0)
                if os.path.exists(oldest):
                    os.unlink(oldest)
        return path

    def after_train(self):
        super().after_train()
        # The last periodic checkpoint and model_final are two writes. A run killed between them
        # resumes at max_iter, trains nothing and would never write the final file it owes: copy it
        # from the checkpoint it resumed, which holds the same (last) iteration.
        trainer = self.trainer
        final = os.path.join(self.checkpointer.save_dir, f"{self.file_prefix}_final.pth")
        if trainer.start_iter < trainer.max_iter or os.path.exists(final) or not comm.is_main_process():
            return
        if not self.checkpointer._is_local() or not self.checkpointer.has_checkpoint():
            return
        resumed = self.checkpointer.get_checkpoint_file()
        logger.info("Training had already finished; writing %s from %s", final, resumed)
        with open(resumed, "rb") as src:
            atomic_write(final, lambda dst: shutil.copyfileobj(src, dst))
        self.checkpointer.tag_last_checkpoint(os.path.basename(final))


def capture_rng_state() -> Dict:
    """Python, numpy, torch CPU and (if present) CUDA generator states, as checkpoint-safe values."""
    np_state = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": (np_state[0], np_state[1].tolist(), int(np_state[2]), int(np_state[3]), float(np_state[4])),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _as_tuple(x):
    return tuple(_as_tuple(v) for v in x) if isinstance(x, (list, tuple)) else x


def restore_rng_state(state: Dict) -> None:
    """Inverse of :func:`capture_rng_state`."""
    random.setstate(_as_tuple(state["python"]))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        if len(state["cuda"]) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(state["cuda"])
        else:
            logger.warning(
                "Checkpoint holds CUDA RNG states of %d devices, this process sees %d: not restored.",
                len(state["cuda"]),
                torch.cuda.device_count(),
            )
