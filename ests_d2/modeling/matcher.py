"""Hungarian matching of ESTS queries to ground-truth text instances (DINO-style costs).

Per image, the cost of assigning query q to ground truth j is

    C[q, j] = cost_bbox * L1(box_q, box_j) + cost_class * focal(q, label_j) + cost_giou * (-GIoU(box_q, box_j))

with boxes in normalised (cx, cy, w, h) and the focal term evaluated at p = sigmoid(logit[q, label_j]).
The official code has no polygon or recognition cost. The assignment is
``scipy.optimize.linear_sum_assignment``.
"""
from typing import Dict, List, Sequence, Tuple

import torch
from scipy.optimize import linear_sum_assignment
from torch import nn

from detectron2.config import configurable

from .layers import box_cxcywh_to_xyxy

__all__ = ["HungarianMatcher", "generalized_box_iou"]


def generalized_box_iou(boxes1: torch.Tensor, boxes2: torch.Tensor) -> torch.Tensor:
    """Pairwise GIoU of (N, 4) and (M, 4) xyxy boxes -> (N, M).

    Unlike ``torchvision.ops.generalized_box_iou`` this keeps the official ``+1e-6`` in both
    denominators: with the small normalised boxes of text it changes the loss in the 4th digit.
    """
    if not (boxes1[:, 2:] >= boxes1[:, :2]).all() or not (boxes2[:, 2:] >= boxes2[:, :2]).all():
        raise ValueError("generalized_box_iou needs boxes with x1 >= x0 and y1 >= y0")
    area1 = (boxes1[:, 2] - boxes1[:, 0]) * (boxes1[:, 3] - boxes1[:, 1])
    area2 = (boxes2[:, 2] - boxes2[:, 0]) * (boxes2[:, 3] - boxes2[:, 1])
    inter_wh = (torch.min(boxes1[:, None, 2:], boxes2[:, 2:]) - torch.max(boxes1[:, None, :2], boxes2[:, :2]))
    inter_wh = inter_wh.clamp(min=0)
    inter = inter_wh[..., 0] * inter_wh[..., 1]
    union = area1[:, None] + area2 - inter
    iou = inter / (union + 1e-6)
    hull_wh = (torch.max(boxes1[:, None, 2:], boxes2[:, 2:]) - torch.min(boxes1[:, None, :2], boxes2[:, :2]))
    hull_wh = hull_wh.clamp(min=0)
    hull = hull_wh[..., 0] * hull_wh[..., 1]
    return iou - (hull - union) / (hull + 1e-6)


class HungarianMatcher(nn.Module):
    """One-to-one assignment of predictions to targets, independently for each image.

    Inputs (the official output / target dicts):
        outputs: ``pred_logits`` (B, Nq, C) class logits and ``pred_boxes`` (B, Nq, 4) sigmoid (cx, cy, w, h);
            other keys are ignored.
        targets: B dicts with ``labels`` (n_i,) int64 class ids and ``boxes`` (n_i, 4) normalised (cx, cy, w, h).
    """

    @configurable
    def __init__(
        self,
        *,
        cost_class: float,
        cost_bbox: float,
        cost_giou: float,
        focal_alpha: float = 0.25,
        focal_gamma: float = 2.0,
    ):
        """
        Args:
            cost_class, cost_bbox, cost_giou: weights of the focal class cost, the L1 box cost and the
                negative-GIoU cost.
            focal_alpha, focal_gamma: focal-loss parameters of the class cost.
        """
        super().__init__()
        if cost_class == 0 and cost_bbox == 0 and cost_giou == 0:
            raise ValueError("MODEL.ESTS.MATCHER: all three matching costs are 0")
        self.cost_class = cost_class
        self.cost_bbox = cost_bbox
        self.cost_giou = cost_giou
        self.focal_alpha = focal_alpha
        self.focal_gamma = focal_gamma

    @classmethod
    def from_config(cls, cfg):
        e = cfg.MODEL.ESTS
        return {
            "cost_class": e.MATCHER.COST_CLASS,
            "cost_bbox": e.MATCHER.COST_BBOX,
            "cost_giou": e.MATCHER.COST_GIOU,
            "focal_alpha": e.LOSS.FOCAL_ALPHA,
            "focal_gamma": e.LOSS.FOCAL_GAMMA,
        }

    @torch.no_grad()
    def cost_matrices(self, outputs: Dict[str, torch.Tensor], targets: Sequence[Dict]) -> List[torch.Tensor]:
        """The matching cost of every image: a list of B float32 CPU tensors of shape (Nq, n_i)."""
        batch_size, num_queries = outputs["pred_logits"].shape[:2]
        # As the official code: one batched cost over all targets of the batch, then split per image.
        # float32 even under autocast: in half precision log(1 - p + 1e-8) reaches -inf for confident
        # queries and the assignment becomes infeasible.
        prob = outputs["pred_logits"].flatten(0, 1).float().sigmoid()
        pred_boxes = outputs["pred_boxes"].flatten(0, 1).float()
        tgt_labels = torch.cat([t["labels"] for t in targets]).long()
        tgt_boxes = torch.cat([t["boxes"] for t in targets]).to(pred_boxes)

        alpha, gamma = self.focal_alpha, self.focal_gamma
        neg_cost = (1 - alpha) * (prob**gamma) * (-(1 - prob + 1e-8).log())
        pos_cost = alpha * ((1 - prob) ** gamma) * (-(prob + 1e-8).log())
        cost_class = pos_cost[:, tgt_labels] - neg_cost[:, tgt_labels]
        cost_bbox = torch.cdist(pred_boxes, tgt_boxes, p=1)
        cost_giou = -generalized_box_iou(box_cxcywh_to_xyxy(pred_boxes), box_cxcywh_to_xyxy(tgt_boxes))

        cost = self.cost_bbox * cost_bbox + self.cost_class * cost_class + self.cost_giou * cost_giou
        cost = cost.view(batch_size, num_queries, -1).cpu()
        sizes = [len(t["boxes"]) for t in targets]
        return [c[i] for i, c in enumerate(cost.split(sizes, dim=-1))]

    @torch.no_grad()
    def forward(self, outputs: Dict[str, torch.Tensor],
                targets: Sequence[Dict]) -> List[Tuple[torch.Tensor, torch.Tensor]]:
        """
        Returns:
            B pairs ``(query_idx, target_idx)`` of int64 CPU tensors of length min(Nq, n_i): query
            ``query_idx[k]`` is assigned to target ``target_idx[k]``; query indices are increasing.
        """
        indices = []
        for cost in self.cost_matrices(outputs, targets):
            rows, cols = linear_sum_assignment(cost.numpy())
            indices.append((torch.as_tensor(rows, dtype=torch.int64), torch.as_tensor(cols, dtype=torch.int64)))
        return indices
