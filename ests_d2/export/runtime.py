"""``OnnxTextSpotter``: run an exported ESTS with ONNX Runtime; numpy, Pillow and onnxruntime only (no torch).

Pre-processing (detectron2 ``DefaultPredictor``'s: shortest-edge resize with PIL bilinear, channel order,
``ESTS.normalize``) and post-processing (``ESTSPostProcess`` + vocabulary decoding) are written in numpy here,
so that the results match the PyTorch ``TextSpotterPredictor`` (``tests/export`` checks it).
"""
import json
from pathlib import Path
from typing import Dict, Optional, Sequence, Tuple

import numpy as np
from PIL import Image

from ..structures.vocabulary import CharVocabulary

__all__ = ["OnnxTextSpotter", "TextDetections", "resize_shortest_edge_shape"]

SIDECAR_FORMAT = "ests-d2-onnx/1"  # = onnx_export.SIDECAR_FORMAT (not imported: that module needs torch)
_OUTPUTS = ("pred_logits", "pred_boxes", "pred_beziers", "pred_rec", "topk_index")


def resize_shortest_edge_shape(height: int, width: int, short_edge: int, max_size: int) -> Tuple[int, int]:
    """detectron2 ``ResizeShortestEdge.get_output_shape``: (new_h, new_w), the long side capped at max_size."""
    scale = short_edge * 1.0 / min(height, width)
    new_h, new_w = (short_edge * 1.0, scale * width) if height < width else (scale * height, short_edge * 1.0)
    if max(new_h, new_w) > max_size:
        scale = max_size * 1.0 / max(new_h, new_w)
        new_h, new_w = new_h * scale, new_w * scale
    return int(new_h + 0.5), int(new_w + 0.5)


class TextDetections:
    """Per-image detections as numpy arrays, with the fields (and the small part of the API) of the
    ``Instances`` the PyTorch model returns: ``scores`` (n,), ``pred_classes`` (n,), ``pred_boxes`` (n, 4) xyxy
    pixels, ``polygons`` (n, 32) pixels, ``rec`` (n, T), ``rec_scores`` (n, T), ``rec_probs`` (n, T, V),
    ``texts`` (n strings), ``query_index`` (n,); ``image_size`` (height, width) of the original image."""

    def __init__(self, image_size: Tuple[int, int], **fields):
        self.image_size = tuple(image_size)
        self._fields = fields

    def __getattr__(self, name):
        fields = self.__dict__.get("_fields", {})
        if name in fields:
            return fields[name]
        raise AttributeError(f"TextDetections has no field '{name}'")

    def has(self, name: str) -> bool:
        return name in self._fields

    def get_fields(self) -> Dict:
        return dict(self._fields)

    def __len__(self) -> int:
        return len(self._fields["scores"])

    def __getitem__(self, index) -> "TextDetections":
        """A subset: a boolean mask, an index array, an int or a slice (as ``Instances.__getitem__``)."""
        if isinstance(index, int):
            index = [index]
        positions = np.arange(len(self))[index]
        picked = {k: ([v[i] for i in positions] if isinstance(v, list) else v[positions])
                  for k, v in self._fields.items()}
        return TextDetections(self.image_size, **picked)


def _sidecar_field(sidecar: Dict, path: str, dotted: str):
    node = sidecar
    for key in dotted.split("."):
        if not isinstance(node, dict) or key not in node:
            raise ValueError(f"{path}: missing field '{dotted}' (write the sidecar with tools/export_model.py)")
        node = node[key]
    return node


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


class OnnxTextSpotter:
    """An exported ESTS under ONNX Runtime: ``spotter(image_bgr)`` -> ``{"instances": TextDetections}``.

    Args:
        onnx_path: the file written by ``tools/export_model.py``.
        sidecar: its json sidecar (default: the same path with ``.json``).
        score_threshold: minimum detection score kept (default: the sidecar's ``score_threshold``).
        num_threads: ONNX Runtime intra-op threads (0: its default).
        providers: ONNX Runtime execution providers (default: CPU).
    """

    def __init__(self, onnx_path, sidecar=None, score_threshold: Optional[float] = None, num_threads: int = 0,
                 providers: Sequence[str] = ("CPUExecutionProvider",)):
        import onnxruntime  # the optional extra: pip install ests-d2[export]

        onnx_path = Path(onnx_path)
        if not onnx_path.is_file():
            raise FileNotFoundError(f"ONNX model {onnx_path} does not exist")
        sidecar_file = Path(sidecar) if sidecar is not None else onnx_path.with_suffix(".json")
        if not sidecar_file.is_file():
            raise FileNotFoundError(f"sidecar {sidecar_file} of {onnx_path} does not exist (tools/export_model.py "
                                    "writes it beside the .onnx file)")
        self._read_sidecar(sidecar_file)
        self.score_threshold = self.default_score_threshold if score_threshold is None else float(score_threshold)
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = num_threads
        self.session = onnxruntime.InferenceSession(str(onnx_path), options, providers=list(providers))
        inputs = [i.name for i in self.session.get_inputs()]
        outputs = [o.name for o in self.session.get_outputs()]
        if inputs != [self.input_name] or outputs != list(_OUTPUTS):
            raise ValueError(f"{onnx_path}: inputs {inputs} / outputs {outputs} are not those of {sidecar_file} "
                             f"({[self.input_name]} / {list(_OUTPUTS)})")

    def _read_sidecar(self, path: Path) -> None:
        try:
            sidecar = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}: not valid JSON ({err})") from err
        fmt = _sidecar_field(sidecar, str(path), "format")
        if fmt != SIDECAR_FORMAT:
            raise ValueError(f"{path}: field 'format' is {fmt!r}, this version reads {SIDECAR_FORMAT!r}")
        field = lambda name: _sidecar_field(sidecar, str(path), name)  # noqa: E731
        self.input_name = field("input.name")
        self.channel_order = field("input.channel_order")
        if self.channel_order not in ("RGB", "BGR"):
            raise ValueError(f"{path}: field 'input.channel_order' must be RGB or BGR, got {self.channel_order!r}")
        # ESTS.normalize: (x / 255 - mean / 255) / (std / 255), the statistics rounded to float32 from float64
        self.mean01 = (np.asarray(field("input.pixel_mean"), np.float64) / 255).astype(np.float32).reshape(3, 1, 1)
        self.std01 = (np.asarray(field("input.pixel_std"), np.float64) / 255).astype(np.float32).reshape(3, 1, 1)
        self.min_size_test, self.max_size_test = int(field("input.min_size_test")), int(field("input.max_size_test"))
        self.num_select = int(field("num_select"))
        self.default_score_threshold = float(field("score_threshold"))
        self.vocabulary = CharVocabulary(field("vocabulary.characters"))

    # ------------------------------------------------------------------------------------------------
    def preprocess(self, image_bgr: np.ndarray) -> np.ndarray:
        """(H, W, 3) uint8 BGR -> the network input (1, 3, h, w) float32 (docs/EXPORT.md)."""
        if not isinstance(image_bgr, np.ndarray) or image_bgr.ndim != 3 or image_bgr.shape[2] != 3:
            got = getattr(image_bgr, "shape", type(image_bgr))
            raise ValueError(f"expected an (H, W, 3) BGR image array, got {got}")
        if image_bgr.dtype != np.uint8:
            raise ValueError(f"expected a uint8 image, got {image_bgr.dtype}")
        image = image_bgr[:, :, ::-1] if self.channel_order == "RGB" else image_bgr
        height, width = image.shape[:2]
        new_h, new_w = resize_shortest_edge_shape(height, width, self.min_size_test, self.max_size_test)
        resized = np.asarray(Image.fromarray(np.ascontiguousarray(image)).resize((new_w, new_h), Image.BILINEAR))
        pixels = resized.astype(np.float32).transpose(2, 0, 1)
        return ((pixels / np.float32(255) - self.mean01) / self.std01)[None]

    def run_network(self, network_input: np.ndarray) -> Dict[str, np.ndarray]:
        """The graph's outputs (``OUTPUT_NAMES``) for one preprocessed image."""
        return dict(zip(_OUTPUTS, self.session.run(None, {self.input_name: network_input})))

    def postprocess(self, outputs: Dict[str, np.ndarray], image_size: Tuple[int, int]) -> TextDetections:
        """``ESTSPostProcess`` + decoding: the top ``num_select`` (query, class) pairs, in original-image pixels."""
        logits = outputs["pred_logits"][0].astype(np.float32)
        num_classes = logits.shape[-1]
        scores_all = 1 / (1 + np.exp(-logits.reshape(-1)))
        order = np.argsort(-scores_all, kind="stable")[: self.num_select]
        query, labels = order // num_classes, order % num_classes
        rec_probs = _softmax(outputs["pred_rec"][0][query].astype(np.float32))
        rec = rec_probs.argmax(-1)
        height, width = image_size
        scale = np.array([width, height, width, height], np.float32)
        cx, cy, w, h = np.moveaxis(outputs["pred_boxes"][0][query], -1, 0)
        boxes = np.stack([cx - 0.5 * w, cy - 0.5 * h, cx + 0.5 * w, cy + 0.5 * h], -1) * scale
        polygons = outputs["pred_beziers"][0][query] * np.tile(scale[:2], outputs["pred_beziers"].shape[-1] // 2)
        detections = TextDetections(
            image_size, scores=scores_all[order], pred_classes=labels, pred_boxes=boxes, polygons=polygons, rec=rec,
            rec_scores=rec_probs.max(-1), rec_probs=rec_probs, texts=[self.vocabulary.decode(ids) for ids in rec],
            query_index=query,
        )
        return detections[detections.scores >= self.score_threshold]

    def __call__(self, image_bgr: np.ndarray) -> Dict[str, TextDetections]:
        """(H, W, 3) uint8 BGR image (as ``cv2.imread``) -> ``{"instances": TextDetections}``."""
        outputs = self.run_network(self.preprocess(image_bgr))
        return {"instances": self.postprocess(outputs, image_bgr.shape[:2])}
