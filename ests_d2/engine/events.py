"""Metric writers for runs that get killed and resumed."""
import json
import os

from detectron2.utils.events import CommonMetricPrinter, JSONWriter
from detectron2.utils.file_io import PathManager

from .checkpoint import atomic_write

__all__ = ["MetricPrinter", "ResumableJSONWriter"]


class MetricPrinter(CommonMetricPrinter):
    """detectron2's console printer without its division by zero.

    Before ``IterationTimer`` has timed 3 iterations, detectron2 estimates the ETA from the previous
    write and divides by the iterations in between, which is zero when a run crashes right after a
    write (``after_train`` writes again at the same iteration): the ZeroDivisionError then replaces
    the real exception.
    """

    def _get_eta(self, storage):
        if self._last_write is not None and self._last_write[0] == storage.iter:
            return None
        return super()._get_eta(storage)


class ResumableJSONWriter(JSONWriter):
    """detectron2's ``metrics.json`` writer, made consistent across kills and resumes.

    A killed run leaves lines for the iterations after its last checkpoint (which the resumed run
    trains and logs again) and possibly a torn last line. Before its first write this writer
    rewrites the file atomically, keeping only complete lines and, when ``resume_iter`` is set (the
    first iteration of the resumed run), only iterations before it. The file then reads like the
    log of one uninterrupted run.
    """

    def __init__(self, json_file: str, window_size: int = 20):
        # Not JSONWriter.__init__: it opens the file for appending right away, and a file rewritten
        # by ``os.replace`` afterwards would leave that handle on the old copy.
        self._json_file = json_file
        self._window_size = window_size
        self._last_write = -1
        self._file_handle = None
        self.resume_iter = None

    def _prune(self):
        if not os.path.isfile(self._json_file):
            return
        kept = []
        with open(self._json_file) as f:
            for line in f:
                try:
                    row = json.loads(line)
                except json.JSONDecodeError:
                    continue  # torn by a kill
                if self.resume_iter is not None and row.get("iteration", -1) >= self.resume_iter:
                    continue
                kept.append(line if line.endswith("\n") else line + "\n")
        atomic_write(self._json_file, lambda f: f.write("".join(kept).encode()))

    def write(self):
        if self._file_handle is None:
            self._prune()
            self._file_handle = PathManager.open(self._json_file, "a")
        super().write()

    def close(self):
        if self._file_handle is not None:
            self._file_handle.close()
