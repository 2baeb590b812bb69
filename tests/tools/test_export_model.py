"""tools/export_model.py: a tiny checkpoint exported and verified from the command line; one-line errors."""
import json
import os
import re
import subprocess
import sys

import pytest

from tests.export.tiny_export import REAL_IMAGE, REPO, tiny_model_files


def _run(*args):
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.run([sys.executable, str(REPO / "tools" / "export_model.py"), *map(str, args)],
                          capture_output=True, text=True, env=env, cwd=REPO, timeout=600)


@pytest.fixture(scope="module")
def tiny_files(tmp_path_factory):
    return tiny_model_files(tmp_path_factory.mktemp("export_cli"))


@pytest.mark.slow
def test_export_writes_onnx_and_sidecar_and_verifies_them(tiny_files, tmp_path):
    pytest.importorskip("onnxruntime", reason="the ONNX tests need the export extra: pip install -e .[export]")
    config, _, _ = tiny_files
    proc = _run("--config-file", config, "--output", tmp_path / "tiny.onnx", "--verify", REAL_IMAGE)
    assert proc.returncode == 0, proc.stderr[-3000:]
    sidecar = json.loads((tmp_path / "tiny.json").read_text(encoding="utf-8"))
    assert sidecar["input"]["min_size_test"] == 160 and len(sidecar["vocabulary"]["characters"]) == 95
    diffs = dict(re.findall(r"(pred_\w+) ([0-9.e+-]+)", proc.stdout))
    assert set(diffs) == {"pred_logits", "pred_boxes", "pred_beziers", "pred_rec"}
    assert all(float(v) <= 1e-3 for v in diffs.values()), proc.stdout
    assert "selected tokens that differ: 0" in proc.stdout


@pytest.mark.parametrize("opts, message", [
    (["MODEL.RESNETS.DEFORM_ON_PER_STAGE", "[False,True,True,True]"], "MODEL.RESNETS.DEFORM_ON_PER_STAGE enables "
     "deformable convolutions, a detectron2 C++ op with no ONNX equivalent: export a model without them"),
    (["MODEL.WEIGHTS", ""], "MODEL.WEIGHTS is empty: pass the trained weights (--opts MODEL.WEIGHTS model.pth)"),
    (["MODEL.NO_SUCH_KEY", "1"], "Non-existent key: MODEL.NO_SUCH_KEY"),  # yacs asserts: a user error all the same
])
def test_unexportable_configs_fail_with_one_line_naming_the_option(tiny_files, tmp_path, opts, message):
    config, _, _ = tiny_files
    proc = _run("--config-file", config, "--output", tmp_path / "x.onnx", "--opts", *opts)
    assert proc.returncode == 1
    errors = [line for line in proc.stderr.splitlines() if line.startswith("export_model.py: error:")]
    assert errors == [f"export_model.py: error: {message}"] and "Traceback" not in proc.stderr, proc.stderr
    assert not (tmp_path / "x.onnx").exists()


@pytest.mark.slow
def test_quantize_int8_writes_the_int8_model_beside_the_exact_one(tiny_files, tmp_path):
    pytest.importorskip("onnxruntime", reason="the ONNX tests need the export extra: pip install -e .[export]")
    config, _, _ = tiny_files
    proc = _run("--config-file", config, "--output", tmp_path / "tiny.onnx", "--quantize", "int8", "--verify")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (tmp_path / "tiny.onnx").is_file() and (tmp_path / "tiny.int8.onnx").is_file()
    assert "quantization" not in json.loads((tmp_path / "tiny.json").read_text(encoding="utf-8"))
    assert json.loads((tmp_path / "tiny.int8.json").read_text(encoding="utf-8"))["quantization"]["mode"] == "int8"
    exact, int8 = (line for line in proc.stdout.splitlines() if "vs PyTorch" in line)
    assert exact.startswith("ONNX Runtime vs PyTorch") and int8.startswith("int8 ONNX Runtime (reduced precision)")
    assert all(float(v) <= 1e-3 for v in re.findall(r"pred_\w+ ([0-9.e+-]+)", exact)), exact
    assert max(float(v) for v in re.findall(r"pred_\w+ ([0-9.e+-]+)", int8)) > 1e-3, int8  # it is quantised
