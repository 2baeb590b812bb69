"""``tools/train_net.py`` with the tiny test task (what the end-to-end engine tests run in a subprocess)."""
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT), str(ROOT / "tools")]

import train_net  # noqa: E402  (needs the path above)
from tests.engine.tiny_engine import TinyTrainer  # noqa: E402

if __name__ == "__main__":
    train_net.invoke_main(TinyTrainer)
