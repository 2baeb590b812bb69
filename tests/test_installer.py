"""The installer keeps an existing detectron2, and its sdist patch refuses unexpected sources."""
import hashlib
import os
import site
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _throwaway_venv(tmp_path: Path) -> Path:
    """A new venv that sees the packages of the one the tests run in, and whose install stamp names this
    checkout. install.sh must never run against ``sys.prefix`` itself: when that venv's stamp names another
    checkout (a shared venv, a git worktree), it would re-install the project there from this checkout."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    purelib = subprocess.run(
        [str(venv / "bin" / "python"), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()
    # addsitedir (not a plain path line) so that the .pth files there, e.g. an editable install's, apply too
    lines = [f"import site; site.addsitedir({p!r})" for p in site.getsitepackages()]
    Path(purelib, "running_venv.pth").write_text("\n".join(lines) + "\n")
    setup_sha = hashlib.sha256((REPO / "setup.py").read_bytes()).hexdigest()
    (venv / ".ests-d2-installed").write_text(f"{setup_sha} {REPO}\n")
    return venv


def test_installer_skips_detectron2_when_importable(tmp_path):
    # torch and detectron2 are importable in the throwaway venv (through the running venv's packages)
    venv = _throwaway_venv(tmp_path)
    env = dict(os.environ, VENV=str(venv), BUILD=str(tmp_path / "d2build"))
    result = subprocess.run(
        ["bash", str(REPO / "scripts" / "install.sh")], env=env, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr
    assert "detectron2 already importable -- skipping its build" in result.stdout
    assert "building detectron2" not in result.stdout
    assert f"ests-d2 already installed from {REPO}" in result.stdout
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
    env = dict(os.environ, VENV=str(_throwaway_venv(tmp_path)), BUILD=str(tmp_path / "d2build"),
               WHEELHOUSE=str(tmp_path))
    result = subprocess.run(
        ["bash", str(REPO / "scripts" / "install.sh")], env=env, capture_output=True, text=True, timeout=600
    )
    assert result.returncode != 0
    assert f"WHEELHOUSE={tmp_path} holds no pb1-detectron2-0.6.tar.gz" in result.stderr
