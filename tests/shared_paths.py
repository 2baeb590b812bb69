"""Where the shared reference material (golden tensors, docs, data) lives for the tests.

CI checks the repository out with the shared folder beside it (``<repo>/../shared``). Candidates, first
existing wins: ``$ESTS_SHARED_DIR``; ``<repo>/../shared``; for a ``git worktree`` checkout, the
``../shared`` beside the main checkout (so worktrees find the same folder as the main checkout).
Tests that need the material call ``require_golden_file`` / ``require_shared``, which skip the test
with a clear reason when it is absent.
"""
import os
from pathlib import Path
from typing import List, Optional

import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]


def _main_checkout_of_worktree(repo_root: Path) -> Optional[Path]:
    """The main checkout when ``repo_root`` is a linked git worktree (its ``.git`` is a file), else None."""
    dot_git = repo_root / ".git"
    if not dot_git.is_file():
        return None
    text = dot_git.read_text().strip()
    if not text.startswith("gitdir:"):
        return None
    gitdir = (repo_root / text[len("gitdir:"):].strip()).resolve()
    commondir_file = gitdir / "commondir"
    if not commondir_file.is_file():
        return None
    common = (gitdir / commondir_file.read_text().strip()).resolve()  # the main checkout's .git
    return common.parent


def _candidates() -> List[Path]:
    override = os.environ.get("ESTS_SHARED_DIR")
    if override:
        return [Path(override)]
    found = [REPO_ROOT / ".." / "shared"]
    main = _main_checkout_of_worktree(REPO_ROOT)
    if main is not None:
        found.append(main / ".." / "shared")
    return [p.resolve() for p in found]


def shared_dir() -> Path:
    """The first existing candidate (see the module docstring), else the CI location."""
    candidates = _candidates()
    return next((p for p in candidates if p.is_dir()), candidates[0])


def require_shared(relative_path: str) -> Path:
    """Path of ``relative_path`` inside the shared folder; skips the calling test if it is missing."""
    path = shared_dir() / relative_path
    if not path.exists():
        pytest.skip(f"shared reference file {path} is absent (CI provides it at ../shared beside the repo)")
    return path


def require_golden_file(name: str) -> Path:
    """Path of a golden parity file (e.g. ``"outputs.pth"``); skips the calling test if it is missing."""
    return require_shared(f"golden/{name}")


def load_golden(name: str):
    """``torch.load`` of a golden ``.pth`` file (plain tensors only), skipping the test when it is absent."""
    return torch.load(require_golden_file(name), map_location="cpu", weights_only=True)
