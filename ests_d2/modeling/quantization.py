"""Opt-in int8 inference on the CPU: the transformer's matrix products with int8 weights (PyTorch dynamic
quantisation), everything that places samples or makes the final predictions kept in float32.

The same split as the int8 ONNX export (``ests_d2/export/quantize.py``): sampling offsets and attention weights
decide *where* deformable attention reads, so an error there moves every sample; the heads make the scores,
boxes and characters the user sees. The projections and feed-forward layers (most of the work: docs/EXPORT.md)
take int8 weights per output channel and activations quantised at run time. Outputs are no longer those of the
float32 model (no parity claim); speed and agreement are measured in docs/EXPORT.md.
"""
from typing import List

import torch

QUANTIZATION_MODES = ("int8",)
# Linear layers (and exported MatMul nodes) whose names contain one of these stay float32.
FLOAT32_MODULE_KEYS = ("sampling_offsets", "attention_weights", "class_embed", "bbox_embed", "polygon_embed",
                       "rec_cls", "rec_proj", "ref_point_head", "enc_out_")


def int8_linear_names(model: torch.nn.Module) -> List[str]:
    """Names of the ``nn.Linear`` modules of ``model`` that ``quantize_linears`` makes int8."""
    return [name for name, module in model.named_modules()
            if isinstance(module, torch.nn.Linear) and not any(key in name for key in FLOAT32_MODULE_KEYS)]


def quantize_linears(model: torch.nn.Module, mode: str = "int8") -> torch.nn.Module:
    """An inference-only copy of ``model`` (a CPU ESTS in eval mode) with int8 linears (see the module docstring)."""
    if mode not in QUANTIZATION_MODES:
        raise ValueError(f"quantization mode {mode!r} is not one of {QUANTIZATION_MODES}")
    if model.training:
        raise ValueError("int8 quantization is for inference: call model.eval() first")
    devices = {p.device.type for p in model.parameters()}
    if devices != {"cpu"}:
        raise ValueError(f"int8 quantization runs on the CPU only; the model is on {sorted(devices)}")
    return torch.ao.quantization.quantize_dynamic(model, set(int8_linear_names(model)), dtype=torch.qint8)
