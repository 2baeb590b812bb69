"""Export a built ESTS model to ONNX, with the json sidecar that ``runtime.OnnxTextSpotter`` reads.

The graph is ``network.ExportableESTS`` traced by PyTorch's TorchScript-based exporter (``dynamo=False``):
its tracer records tensor sizes as graph values, so one file serves every image size. Contract in
docs/EXPORT.md.
"""
import json
import warnings
from pathlib import Path
from typing import Dict, Sequence, Tuple

import torch

from ..modeling.meta_arch import ESTS
from .network import OUTPUT_NAMES, ExportableESTS, check_exportable
from .symbolics import register_symbolics

__all__ = ["OPSET", "SIDECAR_FORMAT", "export_onnx", "sidecar_path", "sidecar_of"]

# GridSample and RoiAlign(half_pixel) need opset 16; 17 adds LayerNormalization (one node per norm)
OPSET = 17
SIDECAR_FORMAT = "ests-d2-onnx/1"
INPUT_NAME = "image"


def sidecar_path(onnx_path) -> Path:
    """Where the sidecar of ``model.onnx`` lives: ``model.json`` beside it."""
    return Path(onnx_path).with_suffix(".json")


def sidecar_of(cfg, model: ESTS, score_threshold: float) -> Dict:
    """Everything pre- and post-processing need, so that a deployment needs neither torch nor the config."""
    e = cfg.MODEL.ESTS
    return {
        "format": SIDECAR_FORMAT,
        "input": {
            "name": INPUT_NAME, "layout": "NCHW", "batch": 1, "dtype": "float32",
            "channel_order": cfg.INPUT.FORMAT,
            "pixel_mean": [float(v) for v in cfg.MODEL.PIXEL_MEAN],  # 0..255 units, in channel_order
            "pixel_std": [float(v) for v in cfg.MODEL.PIXEL_STD],
            "min_size_test": int(cfg.INPUT.MIN_SIZE_TEST), "max_size_test": int(cfg.INPUT.MAX_SIZE_TEST),
        },
        "outputs": list(OUTPUT_NAMES),
        "num_queries": int(e.NUM_QUERIES), "num_classes": int(e.NUM_CLASSES), "num_select": int(e.NUM_SELECT),
        "max_text_len": int(e.MAX_TEXT_LEN),
        "score_threshold": float(score_threshold),
        "vocabulary": {"characters": list(model.vocabulary.characters)},
        "opset": OPSET,
    }


def export_onnx(model: ESTS, cfg, onnx_path, sample_hw: Tuple[int, int] = (320, 416),
                score_threshold: float = 0.0) -> Tuple[Path, Path]:
    """Write ``onnx_path`` (the inference network) and its sidecar; returns both paths.

    Args:
        model: a built ESTS with its trained weights (left unchanged; a copy is exported).
        cfg: the config it was built from (checked with ``check_exportable``; test sizes, pixel statistics).
        sample_hw: size of the random image the graph is traced with; any size works afterwards.
        score_threshold: default minimum detection score of ``OnnxTextSpotter`` (stored in the sidecar).
    """
    check_exportable(cfg)
    onnx_path = Path(onnx_path)
    onnx_path.parent.mkdir(parents=True, exist_ok=True)
    network = ExportableESTS(model).cpu().eval()  # a copy: the caller's model stays where it is
    sample = torch.randn(1, 3, *sample_hw)
    register_symbolics(OPSET)
    with torch.no_grad(), warnings.catch_warnings():
        # the tracer's warnings about Python values are about sizes that ExportableESTS keeps in the graph
        # (checked at several sizes by tests/export), and the exporter's deprecation notice
        warnings.simplefilter("ignore")
        torch.onnx.export(
            network, (sample,), str(onnx_path), dynamo=False, opset_version=OPSET, input_names=[INPUT_NAME],
            output_names=list(OUTPUT_NAMES), dynamic_axes={INPUT_NAME: {2: "height", 3: "width"}},
        )
    side = sidecar_path(onnx_path)
    side.write_text(json.dumps(sidecar_of(cfg, model, score_threshold), indent=1, ensure_ascii=False) + "\n",
                    encoding="utf-8")
    return onnx_path, side


def compare_with_eager(model: ESTS, onnx_path, images: Sequence[torch.Tensor]) -> Dict[str, float]:
    """Max abs difference between ONNX Runtime and the eager network per output, over ``images``
    ((3, H, W) normalised); ``topk_index`` counts the selected tokens that differ."""
    import onnxruntime

    session = onnxruntime.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    worst = dict.fromkeys(OUTPUT_NAMES, 0.0)
    model = model.eval()
    for image in images:
        with torch.no_grad():
            eager = model.official_forward([image])
        ort_out = session.run(None, {INPUT_NAME: image[None].numpy()})
        for name, value in zip(OUTPUT_NAMES, ort_out):
            ref = eager[name].numpy()
            diff = float((value != ref).sum()) if name == "topk_index" else float(abs(value - ref).max())
            worst[name] = max(worst[name], diff)
    return worst
