"""``tools/train_net.py`` with the tiny test task (what the end-to-end engine tests run in a subprocess)."""
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT), str(ROOT / "tools")]

import train_net  # noqa: E402  (needs the path above)
from tests.engine.tiny_engine import TinyTrainer  # noqa: E402


def _slow_saves(seconds: float):
    """Every torch.save sleeps first: a test can signal the process while a checkpoint is being written."""
    import torch

    save = torch.save

    def slow_save(*args, **kwargs):
        time.sleep(seconds)
        return save(*args, **kwargs)

    torch.save = slow_save


if __name__ == "__main__":
    if os.environ.get("TINY_ENGINE_SAVE_SECONDS"):
        _slow_saves(float(os.environ["TINY_ENGINE_SAVE_SECONDS"]))
    train_net.invoke_main(TinyTrainer)
