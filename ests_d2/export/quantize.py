"""Opt-in int8 inference: an int8 version of an exported ESTS (ONNX Runtime dynamic quantisation of the matrix
products, ``quantize_onnx``) and of the PyTorch model (``quantize_linears``), with one split of what stays float32.

Reduced precision, so a separately named file and mode, never the default export (which matches PyTorch within
1e-3): ``onnxruntime.quantization.quantize_dynamic`` stores the weights of the transformer's matrix products as
int8 (per output channel) and quantises their inputs to uint8 at run time (one scale per tensor). ONNX Runtime's
int8 kernels multiply an encoder FFN product ~2.7x faster than float32 on one AVX-512 VNNI thread; the whole
model runs ~1.4x faster, the deformable sampling (float32 ``GridSample``) then taking about half the time
(docs/EXPORT.md, measured).

Left in float32, because a small error there moves or re-ranks what the model outputs rather than blurring a
feature: the deformable attention's sampling offsets and attention weights (where the samples are taken), the
prediction heads (class, box, polygon and character logits, the decoder's reference-box updates), the
encoder's proposal heads (which tokens become queries); and the backbone's convolutions (3-5 % of the time).

The PyTorch version (``torch.ao.quantization.quantize_dynamic`` on the same linears) keeps eager PyTorch's fast
``embedding_bag`` sampling, which the ONNX graph cannot express, and so gains more (docs/EXPORT.md). This module
imports torch, onnx and onnxruntime only inside the function that needs each.
"""
import json
from pathlib import Path
from typing import List

__all__ = ["FLOAT32_NODE_KEYS", "QUANTIZATION_MODES", "float32_matmul_nodes", "int8_linear_names", "quantize_linears",
           "quantize_onnx"]

QUANTIZATION_MODES = ("int8",)
# Linear modules, and the exported MatMul/Gemm nodes (which keep the module names), whose names contain one of
# these stay float32
FLOAT32_NODE_KEYS = ("sampling_offsets", "attention_weights", "class_embed", "bbox_embed", "polygon_embed",
                     "rec_cls", "rec_proj", "ref_point_head", "enc_out_")


def float32_matmul_nodes(model) -> List[str]:
    """Names of the MatMul / Gemm nodes of ``model`` (an ``onnx.ModelProto``) kept in float32."""
    return [node.name for node in model.graph.node
            if node.op_type in ("MatMul", "Gemm") and any(key in node.name for key in FLOAT32_NODE_KEYS)]


def int8_linear_names(model) -> List[str]:
    """Names of the ``nn.Linear`` modules of a PyTorch ESTS that ``quantize_linears`` makes int8."""
    import torch

    return [name for name, module in model.named_modules()
            if isinstance(module, torch.nn.Linear) and not any(key in name for key in FLOAT32_NODE_KEYS)]


def quantize_linears(model, mode: str = "int8"):
    """An inference-only copy of a PyTorch ESTS (on the CPU, in eval mode) with int8 linears: int8 weights,
    activations quantised at run time (``torch.ao.quantization.quantize_dynamic``), the float32 split above."""
    import torch

    _check_mode(mode)
    if model.training:
        raise ValueError("int8 quantization is for inference: call model.eval() first")
    devices = {p.device.type for p in model.parameters()}
    if devices != {"cpu"}:
        raise ValueError(f"int8 quantization runs on the CPU only; the model is on {sorted(devices)}")
    return torch.ao.quantization.quantize_dynamic(model, set(int8_linear_names(model)), dtype=torch.qint8)


def _check_mode(mode: str) -> None:
    if mode not in QUANTIZATION_MODES:
        raise ValueError(f"quantization mode {mode!r} is not one of {QUANTIZATION_MODES}")


def quantize_onnx(fp32_path, output_path, mode: str = "int8"):
    """Write the ``mode`` version of the exported ``fp32_path`` to ``output_path``, with its sidecar.

    The sidecar is the float32 model's, plus ``quantization`` (what was quantised, and that the outputs are
    no longer within the export's 1e-3 of PyTorch).
    """
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    _check_mode(mode)
    fp32_path, output_path = Path(fp32_path), Path(output_path)
    if fp32_path.resolve() == output_path.resolve():
        raise ValueError(f"{output_path}: the quantized model must not overwrite the float32 one")
    sidecar = json.loads(_sidecar_path(fp32_path).read_text(encoding="utf-8"))
    kept = float32_matmul_nodes(onnx.load(str(fp32_path), load_external_data=False))
    output_path.parent.mkdir(parents=True, exist_ok=True)
    quantize_dynamic(str(fp32_path), str(output_path), op_types_to_quantize=["MatMul", "Gemm"],
                     weight_type=QuantType.QInt8, per_channel=True, nodes_to_exclude=kept)
    sidecar["quantization"] = {
        "mode": mode, "method": "onnxruntime.quantization.quantize_dynamic",
        "weights": "int8 per output channel", "activations": "uint8, one scale per tensor, at run time",
        "quantized": "MatMul/Gemm with constant weights", "float32": list(FLOAT32_NODE_KEYS) + ["Conv"],
        "note": "reduced precision: outputs differ from PyTorch beyond the float32 export's 1e-3 (docs/EXPORT.md)",
    }
    side = _sidecar_path(output_path)
    side.write_text(json.dumps(sidecar, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    return output_path, side


def _sidecar_path(onnx_path: Path) -> Path:
    """= ``onnx_export.sidecar_path`` (not imported: that module needs torch, this one only onnxruntime)."""
    return onnx_path.with_suffix(".json")
