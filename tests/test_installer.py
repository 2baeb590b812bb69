"""The installer keeps an existing detectron2, and its sdist patch refuses unexpected sources."""
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_installer_skips_detectron2_when_importable(tmp_path):
    # Run against the environment the tests run in: torch and detectron2 are importable here.
    env = dict(os.environ, VENV=sys.prefix, BUILD=str(tmp_path / "d2build"))
    result = subprocess.run(
        ["bash", str(REPO / "scripts" / "install.sh")], env=env, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr
    assert "detectron2 already importable -- skipping its build" in result.stdout
    assert "building detectron2" not in result.stdout
    assert not (tmp_path / "d2build").exists(), "nothing may be downloaded or built"


def run_patch(path):
    return subprocess.run(
        [sys.executable, str(REPO / "scripts" / "patch_detectron2_sdist.py"), str(path)],
        capture_output=True,
        text=True,
    )


def test_patch_refuses_a_folder_that_is_not_the_sdist(tmp_path):
    result = run_patch(tmp_path)
    assert result.returncode != 0
    assert "not an unpacked detectron2 sdist" in result.stderr


def test_patch_refuses_an_unexpected_sdist(tmp_path):
    pkg = tmp_path / "detectron2"
    (pkg / "model_zoo" / "configs").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "uses_alias.py").write_text("import numpy as np\nx = np.float(1)\n")
    (pkg / "model_zoo" / "model_zoo.py").write_text("import os\n")
    result = run_patch(tmp_path)
    assert result.returncode != 0
    assert "expected 10 edited files, edited 1" in result.stderr
    assert (pkg / "layers" / "csrc" / "vision.cpp").is_file()
    assert "x = float(1)" in (pkg / "uses_alias.py").read_text()


def test_offline_install_refuses_a_wheelhouse_without_the_detectron2_sdist(tmp_path):
    env = dict(os.environ, VENV=sys.prefix, BUILD=str(tmp_path / "d2build"), WHEELHOUSE=str(tmp_path))
    result = subprocess.run(
        ["bash", str(REPO / "scripts" / "install.sh")], env=env, capture_output=True, text=True, timeout=600
    )
    assert result.returncode != 0
    assert f"WHEELHOUSE={tmp_path} holds no pb1-detectron2-0.6.tar.gz" in result.stderr
