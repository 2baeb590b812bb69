"""``TextSpotterPredictor``: a trained ESTS in a few lines of Python (detectron2 ``DefaultPredictor`` shape).

    from ests_d2.engine.predictor import TextSpotterPredictor
    predictor = TextSpotterPredictor.from_files("configs/ESTS/TotalText.yaml", "model_final.pth", device="cpu")
    instances = predictor(cv2.imread("photo.jpg"))["instances"]
    for text, score, polygon in zip(instances.texts, instances.scores, instances.polygons):
        ...
"""
from typing import Dict, Sequence

import numpy as np
import torch
from detectron2.engine import DefaultPredictor
from detectron2.structures import Boxes, Instances

import ests_d2.modeling  # noqa: F401  (registers the ESTS meta-architecture)

from ..config import load_ests_config
from ..structures.text_list import TextList
from ..utils.visualization import select_confident

__all__ = ["TextSpotterPredictor", "detections_to_instances"]


class TextSpotterPredictor(DefaultPredictor):
    """``predictor(image_bgr)`` -> ``{"instances": Instances}`` on the CPU, scores >= ``score_threshold``.

    detectron2's ``DefaultPredictor`` (weights from ``cfg.MODEL.WEIGHTS``, the test resize, the channel order
    of ``cfg.INPUT.FORMAT``, original-image coordinates) for ESTS. Fields (docs/ARCHITECTURE.md): ``scores``,
    ``pred_classes``, ``pred_boxes``, ``polygons`` (n, 32) = 16 (x, y) points in pixels, ``rec``,
    ``rec_scores`` (per-character confidences), ``rec_probs``, ``texts`` (decoded strings).

    Args:
        cfg: an ESTS config (``ests_d2.config.load_ests_config``).
        score_threshold: minimum detection score kept (0: all ``MODEL.ESTS.NUM_SELECT`` detections).
        quantize: "" (float32, the trained model's outputs) or "int8": int8 matrix products on the CPU, ~1.7x
            faster on one thread, outputs no longer those of the float32 model (docs/EXPORT.md;
            ``ests_d2.export.quantize.quantize_linears``).
    """

    def __init__(self, cfg, score_threshold: float = 0.0, quantize: str = ""):
        if cfg.MODEL.META_ARCHITECTURE != "ESTS":
            raise ValueError(f"MODEL.META_ARCHITECTURE is '{cfg.MODEL.META_ARCHITECTURE}', not ESTS")
        if not cfg.MODEL.WEIGHTS:
            raise ValueError("MODEL.WEIGHTS is empty: a predictor needs trained weights")
        super().__init__(cfg)  # builds the model and loads the weights, in eval mode
        if quantize:
            from ..export.quantize import quantize_linears

            self.model = quantize_linears(self.model, quantize)
        self.score_threshold = float(score_threshold)

    @classmethod
    def from_files(cls, config_file: str, weights: str, device: str = "cpu", opts: Sequence[str] = (),
                   score_threshold: float = 0.0, quantize: str = "") -> "TextSpotterPredictor":
        """A predictor from a config file and a weights file (``opts``: extra ``KEY VALUE`` overrides)."""
        cfg = load_ests_config(config_file, ["MODEL.WEIGHTS", weights, "MODEL.DEVICE", device, *opts])
        return cls(cfg, score_threshold, quantize)

    def __call__(self, image_bgr: np.ndarray) -> Dict[str, Instances]:
        """
        Args:
            image_bgr: (H, W, 3) uint8 in BGR order, as ``cv2.imread`` returns it.
        Returns:
            ``{"instances": Instances}`` on the CPU, in the coordinates of ``image_bgr``.
        """
        if not isinstance(image_bgr, np.ndarray) or image_bgr.ndim != 3 or image_bgr.shape[2] != 3:
            got = getattr(image_bgr, "shape", type(image_bgr))
            raise ValueError(f"expected an (H, W, 3) BGR image array, got {got}")
        if image_bgr.dtype != np.uint8:
            raise ValueError(f"expected a uint8 image, got {image_bgr.dtype}")
        instances = super().__call__(image_bgr)["instances"].to("cpu")
        return {"instances": select_confident(instances, self.score_threshold)}


def detections_to_instances(detections) -> Instances:
    """``runtime.TextDetections`` (numpy, from ``OnnxTextSpotter``) as the detectron2 ``Instances`` the PyTorch
    predictor returns, for code written against that (drawing, json records)."""
    instances = Instances(detections.image_size)
    instances.scores = torch.from_numpy(np.asarray(detections.scores, np.float32))
    instances.pred_classes = torch.from_numpy(np.asarray(detections.pred_classes, np.int64))
    instances.pred_boxes = Boxes(torch.from_numpy(np.asarray(detections.pred_boxes, np.float32)).reshape(-1, 4))
    instances.polygons = torch.from_numpy(np.asarray(detections.polygons, np.float32))
    instances.rec = torch.from_numpy(np.asarray(detections.rec, np.int64))
    instances.rec_scores = torch.from_numpy(np.asarray(detections.rec_scores, np.float32))
    instances.rec_probs = torch.from_numpy(np.asarray(detections.rec_probs, np.float32))
    instances.texts = TextList(detections.texts)
    return instances
