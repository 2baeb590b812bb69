"""The opt-in int8 model (ests_d2/export/quantize.py): what is quantised, what stays float32, that it runs."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("onnxruntime", reason="the ONNX tests need the export extra: pip install -e .[export]")
import onnx  # noqa: E402

from ests_d2.export.quantize import FLOAT32_NODE_KEYS, float32_matmul_nodes, quantize_onnx  # noqa: E402
from ests_d2.export.runtime import OnnxTextSpotter  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
QUANTIZED_OPS = {"DynamicQuantizeMatMul", "MatMulInteger", "DynamicQuantizeLinear", "MatMulIntegerToFloat"}


@pytest.fixture(scope="module")
def int8_model(tiny_onnx, tmp_path_factory):
    path, sidecar = quantize_onnx(tiny_onnx["onnx"], tmp_path_factory.mktemp("int8") / "tiny.int8.onnx")
    return path, sidecar


def test_the_transformer_products_are_int8_and_the_sensitive_ones_float32(tiny_onnx, int8_model):
    fp32 = onnx.load(str(tiny_onnx["onnx"]))
    int8 = onnx.load(str(int8_model[0]))
    assert not QUANTIZED_OPS & {n.op_type for n in fp32.graph.node}  # the default export stays float32
    quantized = [n.name for n in int8.graph.node if n.op_type in QUANTIZED_OPS]
    for module in ("linear1", "linear2", "value_proj", "output_proj", "linear1_m", "linear2_m"):
        assert any(f"/{module}/" in name for name in quantized), module
    assert not any(key in name for name in quantized for key in FLOAT32_NODE_KEYS)
    kept = float32_matmul_nodes(fp32)
    assert {key for key in FLOAT32_NODE_KEYS if any(key in name for name in kept)} == set(FLOAT32_NODE_KEYS)
    float_products = {n.name for n in int8.graph.node if n.op_type in ("MatMul", "Gemm")}
    assert set(kept) <= float_products
    assert {n.op_type for n in int8.graph.node if "/backbone/" in n.name or n.name.startswith("/res")} >= {"Conv"}


def test_the_sidecar_says_what_was_quantized(tiny_onnx, int8_model):
    fp32 = json.loads(tiny_onnx["sidecar"].read_text(encoding="utf-8"))
    int8 = json.loads(int8_model[1].read_text(encoding="utf-8"))
    assert int8.pop("quantization")["mode"] == "int8"
    assert int8 == fp32


def test_the_int8_model_runs_and_stays_near_the_float32_one(tiny_onnx, int8_model):
    image = np.random.default_rng(0).standard_normal((1, 3, 160, 224), dtype=np.float32)
    fp32 = OnnxTextSpotter(tiny_onnx["onnx"], num_threads=1).run_network(image)
    int8 = OnnxTextSpotter(int8_model[0], num_threads=1).run_network(image)
    assert {k: v.shape for k, v in int8.items()} == {k: v.shape for k, v in fp32.items()}
    # queries compared by the encoder token they come from (another selection shifts the query order)
    tokens, q32, q8 = np.intersect1d(fp32["topk_index"][0], int8["topk_index"][0], return_indices=True)
    rec32, rec8 = fp32["pred_rec"][0][q32], int8["pred_rec"][0][q8]
    print(len(tokens), np.abs(rec8 - rec32).max(), np.abs(rec32).max(), (rec8.argmax(-1) == rec32.argmax(-1)).mean())
    assert len(tokens) >= 0.8 * fp32["topk_index"].shape[1]
    assert 0 < np.abs(rec8 - rec32).max() < 0.1 * np.abs(rec32).max()  # changed (it is quantised), not much
    assert (rec8.argmax(-1) == rec32.argmax(-1)).mean() > 0.9


def test_quantize_refuses_to_overwrite_the_float32_model_and_unknown_modes(tiny_onnx, tmp_path):
    with pytest.raises(ValueError, match="must not overwrite"):
        quantize_onnx(tiny_onnx["onnx"], tiny_onnx["onnx"])
    with pytest.raises(ValueError, match="'int4' is not one of"):
        quantize_onnx(tiny_onnx["onnx"], tmp_path / "x.onnx", mode="int4")


def test_quantize_module_imports_without_torch():
    # quantize_onnx runs where only onnx / onnxruntime are installed: torch is imported by quantize_linears alone
    code = "import sys, ests_d2.export.quantize; sys.exit('torch' in sys.modules)"
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr or "ests_d2.export.quantize imported torch"
