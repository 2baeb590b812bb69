"""Inference post-processing of ESTS (official ``PostProcess``, spec section 7) and conversion to Instances.

The official selection is a top-``num_select`` over all flattened (query, class) pairs of
sigmoid(pred_logits), with no score threshold and no NMS: the text evaluator applies the dataset's
detection and recognition-confidence thresholds afterwards.
"""
from typing import Dict, List, Tuple

import torch
from torch import nn

from detectron2.config import configurable
from detectron2.structures import Boxes, Instances

from ..structures import CharVocabulary
from ..structures.text_list import TextList
from .layers import box_cxcywh_to_xyxy

__all__ = ["ESTSPostProcess", "result_to_instances"]


class ESTSPostProcess(nn.Module):
    """Official outputs -> per-image detections in original-image pixels.

    ``forward(outputs, target_sizes)``:

    Args:
        outputs: official output dict with ``pred_logits`` (B, Nq, C), ``pred_boxes`` (B, Nq, 4) sigmoid
            cxcywh, ``pred_beziers`` (B, Nq, 2P) normalised polygon, ``pred_rec`` (B, Nq, T, V) logits.
        target_sizes: (B, 2) (height, width) to scale to, i.e. the original image sizes.
    Returns:
        B dicts (official keys), K = ``num_select`` entries sorted by decreasing score: ``scores`` (K,),
        ``labels`` (K,) class id, ``boxes`` (K, 4) xyxy pixels, ``beziers`` (K, 2P) polygon pixels,
        ``rec`` (K, T) argmax ids, ``rec_score`` (K, T) max softmax, ``rec_prob`` (K, T, V) softmax,
        ``query_index`` (K,) the query of each selection.
    """

    @configurable
    def __init__(self, *, num_select: int = 100):
        """
        Args:
            num_select: (query, class) pairs kept per image.
        """
        super().__init__()
        self.num_select = num_select

    @classmethod
    def from_config(cls, cfg):
        return {"num_select": cfg.MODEL.ESTS.NUM_SELECT}

    def extra_repr(self) -> str:
        return f"num_select={self.num_select}"

    @torch.no_grad()
    def forward(self, outputs: Dict[str, torch.Tensor], target_sizes) -> List[Dict[str, torch.Tensor]]:
        logits = outputs["pred_logits"].float()  # scores in float32 even when the heads ran in half precision
        batch, num_queries, num_classes = logits.shape
        target_sizes = torch.as_tensor(target_sizes, device=logits.device)
        if target_sizes.shape != (batch, 2):
            raise ValueError(f"target_sizes must be ({batch}, 2) (height, width), got {tuple(target_sizes.shape)}")
        if self.num_select > num_queries * num_classes:
            raise ValueError(f"MODEL.ESTS.NUM_SELECT ({self.num_select}) exceeds the {num_queries * num_classes} "
                             "(query, class) pairs")
        scores, flat_index = torch.topk(logits.sigmoid().view(batch, -1), self.num_select, dim=1)
        query_index = flat_index // num_classes
        labels = flat_index % num_classes

        def gather(t: torch.Tensor) -> torch.Tensor:
            index = query_index.view(batch, -1, *([1] * (t.dim() - 2))).expand(-1, -1, *t.shape[2:])
            return torch.gather(t, 1, index)

        rec_prob = gather(outputs["pred_rec"].float()).softmax(-1)
        rec_score, rec = rec_prob.max(-1)
        height, width = target_sizes.unbind(1)
        scale = torch.stack([width, height, width, height], dim=1)[:, None, :]
        boxes = gather(box_cxcywh_to_xyxy(outputs["pred_boxes"].float())) * scale
        polygons = gather(outputs["pred_beziers"].float())
        num_points = polygons.shape[-1] // 2
        polygons = polygons * scale[..., :2].repeat(1, 1, num_points)
        return [
            {"scores": scores[i], "labels": labels[i], "boxes": boxes[i], "beziers": polygons[i], "rec": rec[i],
             "rec_score": rec_score[i], "rec_prob": rec_prob[i], "query_index": query_index[i]}
            for i in range(batch)
        ]


def result_to_instances(result: Dict[str, torch.Tensor], image_size: Tuple[int, int],
                        vocabulary: CharVocabulary) -> Instances:
    """One image's ``ESTSPostProcess`` result as detectron2 ``Instances`` (docs/ARCHITECTURE.md contract).

    Args:
        result: one dict returned by ``ESTSPostProcess`` (already in original-image pixels).
        image_size: (height, width) of the original image.
        vocabulary: decodes ``rec`` into ``texts`` (official decoding: padding skipped, unknown as '口').
    Returns:
        Instances with ``scores``, ``pred_classes``, ``pred_boxes`` (Boxes xyxy), ``polygons`` float32 (n, 32),
        ``rec`` int64 (n, T), ``rec_scores`` float32 (n, T), ``rec_probs`` float32 (n, T, V), ``texts``.
    """
    instances = Instances(tuple(image_size))
    instances.scores = result["scores"].float()
    instances.pred_classes = result["labels"].long()
    instances.pred_boxes = Boxes(result["boxes"].float())
    instances.polygons = result["beziers"].float()
    instances.rec = result["rec"].long()
    instances.rec_scores = result["rec_score"].float()
    instances.rec_probs = result["rec_prob"].float()
    instances.texts = TextList(vocabulary.decode(ids) for ids in result["rec"].tolist())
    return instances
