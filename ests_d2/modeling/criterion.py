"""The ESTS training criterion (official ``SetCriterion`` semantics, spec section 5).

Terms per output set (unweighted; weights in ``ESTSCriterion.weight_dict``):

- ``loss_ce``: sigmoid focal loss over all (query, class) pairs / num_boxes; target one-hot of the matched
  GT label, all-zero for unmatched queries.
- ``loss_bbox``: sum of |cxcywh delta| over matched pairs / num_boxes; ``loss_giou``: sum of (1 - GIoU) / num_boxes.
- ``loss_rec``: cross-entropy **mean** over the M * T (matched query, slot) pairs, padding id included.
- ``loss_beziers``: sum of |polygon delta| (32 numbers) / num_boxes against the 16-point polygon sampled from
  the GT Bezier curves in float64 (so the term is float64, as in the official code).
- logged only: ``class_error``, ``cardinality_error``, ``loss_xy``, ``loss_hw``.

Output sets and key suffixes: last decoder layer (none), decoder layers 0..L-2 (``_0`` ...), the encoder
proposals (``_interm``: ce/bbox/giou only) and, in training with denoising, the DN part with a fixed
assignment (``_dn``, ``_dn_0`` ...; normaliser num_boxes * groups). Without DN queries the official code
still reports zero ``*_dn`` placeholders for the ce/box terms, which keeps the logged key set constant.
"""
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import sigmoid_focal_loss

from detectron2.config import configurable
from detectron2.utils import comm

from .layers import box_cxcywh_to_xyxy
from .matcher import HungarianMatcher, generalized_box_iou

__all__ = ["ESTSCriterion", "official_polygon_targets", "build_weight_dict"]

_POLYGON_SAMPLES = np.linspace(0, 1, 8)
# Bernstein weights at u = k/7 computed exactly as the official NumPy code does (float64).
_POLYGON_WEIGHTS = np.stack(
    [
        (1 - _POLYGON_SAMPLES) ** 3,
        3 * _POLYGON_SAMPLES * ((1 - _POLYGON_SAMPLES) ** 2),
        3 * (_POLYGON_SAMPLES**2) * (1 - _POLYGON_SAMPLES),
        _POLYGON_SAMPLES**3,
    ]
)  # (4, 8)
_DN_PLACEHOLDER_KEYS = (
    "loss_bbox_dn", "loss_giou_dn", "loss_ce_dn", "loss_xy_dn", "loss_hw_dn", "cardinality_error_dn"
)


def official_polygon_targets(beziers: torch.Tensor) -> torch.Tensor:
    """The GT polygon of the official loss, bit for bit.

    Args:
        beziers: (n, 16) control points (x, y) x 8, top curve then bottom curve.
    Returns:
        (n, 32) float64: 8 points of the top curve then 8 of the bottom curve, as x, y pairs.

    ``ests_d2.structures.bezier_to_polygon`` samples the same curves but differs in the last bit
    (torch.linspace and the einsum order); the loss keeps the official NumPy arithmetic: float64 weights,
    the four Bernstein terms summed in order.
    """
    ctrl = beziers.to(torch.float64).reshape(-1, 2, 4, 2)  # (n, curve, control point, xy)
    weights = torch.as_tensor(_POLYGON_WEIGHTS, device=beziers.device)  # (4, 8)
    points = sum(weights[k][None, None, :, None] * ctrl[:, :, k, None, :] for k in range(4))  # (n, 2, 8, 2)
    return points.reshape(-1, 32)


def build_weight_dict(
    *,
    class_weight: float,
    bbox_weight: float,
    giou_weight: float,
    rec_weight: float,
    polygon_weight: float,
    num_decoder_layers: int,
    aux_loss: bool,
    with_denoising: bool,
    interm_weight: float,
) -> Dict[str, float]:
    """Weight of every term that enters the total loss (official ``build_ests`` layout).

    With DN and 6 decoder layers: 6 sets x (5 + 5 DN) + 3 interm = 63 keys. The official dict also lists
    ``loss_rec_interm`` / ``loss_beziers_interm``, which are never computed; they are left out here.
    """
    base = {
        "loss_ce": class_weight,
        "loss_bbox": bbox_weight,
        "loss_giou": giou_weight,
        "loss_rec": rec_weight,
        "loss_beziers": polygon_weight,
    }
    per_layer = dict(base)
    if with_denoising:
        per_layer.update({f"{k}_dn": v for k, v in base.items()})
    weights = dict(per_layer)
    if aux_loss:
        for layer in range(num_decoder_layers - 1):
            weights.update({f"{k}_{layer}": v for k, v in per_layer.items()})
    for k in ("loss_ce", "loss_bbox", "loss_giou"):
        weights[f"{k}_interm"] = base[k] * interm_weight
    return weights


class ESTSCriterion(nn.Module):
    """Computes every ESTS loss term of one batch.

    ``forward(outputs, targets)`` takes the official output dict (``pred_logits`` (B,Nq,C), ``pred_boxes``
    (B,Nq,4) sigmoid cxcywh, ``pred_beziers`` (B,Nq,32), ``pred_rec`` (B,Nq,T,V) logits, optional
    ``aux_outputs`` (list of the same), ``interm_outputs`` (logits + boxes), ``dn_meta`` (``pad_size``,
    ``num_dn_group``, ``output_known_lbs_bboxes`` = the DN part in the same layout)) and B official target
    dicts (``labels`` (n,) int64, ``boxes`` (n,4) normalised cxcywh, ``bezier_pts`` (n,16) normalised,
    ``rec`` (n,T) ints). It returns a dict of **unweighted** scalar terms (official names);
    ``weighted_losses`` turns it into the weighted terms whose sum is the official total.
    """

    @configurable
    def __init__(
        self,
        *,
        matcher: HungarianMatcher,
        weight_dict: Dict[str, float],
        focal_alpha: float = 0.25,
        focal_gamma: float = 2.0,
        max_text_len: int = 25,
        aux_loss: bool = True,
    ):
        """
        Args:
            matcher: assigns queries to targets for the non-DN output sets.
            weight_dict: weight of each term entering the total (see ``build_weight_dict``).
            focal_alpha, focal_gamma: focal loss of ``loss_ce``.
            max_text_len: recognition slots T; GT ``rec`` is truncated to its first T ids.
            aux_loss: also compute the terms of the earlier decoder layers (``aux_outputs``).
        """
        super().__init__()
        self.matcher = matcher
        self.weight_dict = dict(weight_dict)
        self.focal_alpha = focal_alpha
        self.focal_gamma = focal_gamma
        self.max_text_len = max_text_len
        self.aux_loss = aux_loss

    @classmethod
    def from_config(cls, cfg):
        e = cfg.MODEL.ESTS
        weight_dict = build_weight_dict(
            class_weight=e.LOSS.CLASS_WEIGHT,
            bbox_weight=e.LOSS.BBOX_WEIGHT,
            giou_weight=e.LOSS.GIOU_WEIGHT,
            rec_weight=e.LOSS.REC_WEIGHT,
            polygon_weight=e.LOSS.POLYGON_WEIGHT,
            num_decoder_layers=e.DEC_LAYERS,
            aux_loss=e.LOSS.AUX,
            with_denoising=e.DN.ENABLED,
            interm_weight=e.LOSS.INTERM_WEIGHT,
        )
        return {
            "matcher": HungarianMatcher(cfg),
            "weight_dict": weight_dict,
            "focal_alpha": e.LOSS.FOCAL_ALPHA,
            "focal_gamma": e.LOSS.FOCAL_GAMMA,
            "max_text_len": e.MAX_TEXT_LEN,
            "aux_loss": e.LOSS.AUX,
        }

    # ----------------------------------------------------------------------------------------------
    # individual terms; ``indices`` is a list of (query_idx, target_idx) per image
    # ----------------------------------------------------------------------------------------------
    @staticmethod
    def _matched_query_index(indices) -> Tuple[torch.Tensor, torch.Tensor]:
        batch = torch.cat([torch.full_like(src, i) for i, (src, _) in enumerate(indices)])
        query = torch.cat([src for src, _ in indices])
        return batch, query

    def loss_labels(self, outputs, targets, indices, num_boxes: float, log: bool) -> Dict[str, torch.Tensor]:
        logits = outputs["pred_logits"].float()  # losses in float32 even when the heads ran under autocast
        idx = self._matched_query_index(indices)
        matched_labels = torch.cat([t["labels"][j] for t, (_, j) in zip(targets, indices)]).to(logits.device)
        onehot = torch.zeros_like(logits)
        onehot[idx[0], idx[1], matched_labels] = 1.0
        focal = sigmoid_focal_loss(logits, onehot, alpha=self.focal_alpha, gamma=self.focal_gamma, reduction="none")
        losses = {"loss_ce": focal.sum() / num_boxes}
        if log:
            losses["class_error"] = self._class_error(logits[idx], matched_labels)
        return losses

    @staticmethod
    @torch.no_grad()
    def _class_error(matched_logits: torch.Tensor, matched_labels: torch.Tensor) -> torch.Tensor:
        """100 - top-1 accuracy (%) of the matched queries; 100 when nothing is matched (official)."""
        if matched_labels.numel() == 0:
            return torch.full((), 100.0, device=matched_logits.device)
        accuracy = (matched_logits.argmax(-1) == matched_labels).float().mean() * 100
        return 100 - accuracy

    @staticmethod
    @torch.no_grad()
    def loss_cardinality(outputs, targets) -> Dict[str, torch.Tensor]:
        """Logged only: |#queries whose argmax is not the last class - #targets|, mean over images."""
        logits = outputs["pred_logits"]
        num_targets = torch.as_tensor([len(t["labels"]) for t in targets], device=logits.device, dtype=torch.float)
        num_pred = (logits.argmax(-1) != logits.shape[-1] - 1).sum(1).float()
        return {"cardinality_error": F.l1_loss(num_pred, num_targets)}

    def loss_boxes(self, outputs, targets, indices, num_boxes: float) -> Dict[str, torch.Tensor]:
        pred = outputs["pred_boxes"][self._matched_query_index(indices)].float()
        gt = torch.cat([t["boxes"][j] for t, (_, j) in zip(targets, indices)]).to(pred)
        l1 = F.l1_loss(pred, gt, reduction="none")
        giou = torch.diag(generalized_box_iou(box_cxcywh_to_xyxy(pred), box_cxcywh_to_xyxy(gt)))
        losses = {"loss_bbox": l1.sum() / num_boxes, "loss_giou": (1 - giou).sum() / num_boxes}
        with torch.no_grad():
            losses["loss_xy"] = l1[:, :2].sum() / num_boxes
            losses["loss_hw"] = l1[:, 2:].sum() / num_boxes
        return losses

    def loss_text(self, outputs, targets, indices, num_boxes: float) -> Dict[str, torch.Tensor]:
        """``loss_rec`` (per-slot CE, mean) and ``loss_beziers`` (float64 polygon L1 / num_boxes)."""
        idx = self._matched_query_index(indices)
        rec_logits = outputs["pred_rec"][idx].float()  # (M, T, V)
        gt_rec = torch.cat([t["rec"][j] for t, (_, j) in zip(targets, indices)])[:, : self.max_text_len]
        if len(rec_logits) > 0:
            loss_rec = F.cross_entropy(rec_logits.flatten(0, 1), gt_rec.flatten(0, 1).long().to(rec_logits.device))
        else:  # no GT in the batch: the official mean over nothing is NaN; 0 keeps training (and the graph) alive
            loss_rec = outputs["pred_rec"].sum() * 0.0

        pred_polygons = outputs["pred_beziers"][idx]
        gt_beziers = torch.cat([t["bezier_pts"][j] for t, (_, j) in zip(targets, indices)])
        gt_polygons = official_polygon_targets(gt_beziers.to(pred_polygons.device))
        loss_polygon = F.l1_loss(pred_polygons.to(torch.float64), gt_polygons, reduction="none").sum() / num_boxes
        return {"loss_rec": loss_rec, "loss_beziers": loss_polygon}

    def output_set_losses(self, outputs, targets, indices, num_boxes: float, with_text: bool, log: bool):
        """The unsuffixed terms of one output set under a given assignment.

        Args:
            outputs: one output set (``pred_logits``, ``pred_boxes``; ``pred_rec``, ``pred_beziers`` if
                ``with_text``); targets: the official target dicts.
            indices: per image ``(query_idx, target_idx)``; num_boxes: the normaliser.
            with_text: add ``loss_rec`` / ``loss_beziers`` (not for the encoder proposals).
            log: add ``class_error`` (the official code logs it for the last decoder layer only).
        """
        losses = self.loss_labels(outputs, targets, indices, num_boxes, log=log)
        losses.update(self.loss_boxes(outputs, targets, indices, num_boxes))
        losses.update(self.loss_cardinality(outputs, targets))
        if with_text:
            losses.update(self.loss_text(outputs, targets, indices, num_boxes))
        return losses

    # ----------------------------------------------------------------------------------------------
    def _num_boxes(self, targets, device) -> float:
        """Mean number of GT instances per process, clamped to >= 1 (all-reduced across workers)."""
        num_boxes = torch.as_tensor([float(sum(len(t["labels"]) for t in targets))], device=device)
        world_size = comm.get_world_size()
        if world_size > 1:
            torch.distributed.all_reduce(num_boxes)
        return torch.clamp(num_boxes / world_size, min=1).item()

    @staticmethod
    def denoising_indices(targets: Sequence[Dict], dn_meta: Dict) -> List[Tuple[torch.Tensor, torch.Tensor]]:
        """The fixed DN assignment: positive slot ``group * single_pad + j`` <-> GT ``j`` for every group.

        ``single_pad = pad_size // num_dn_group`` spans one positive and one negative block.
        """
        groups, pad_size = dn_meta["num_dn_group"], dn_meta["pad_size"]
        if pad_size % groups != 0:
            raise ValueError(f"dn_meta: pad_size {pad_size} is not a multiple of num_dn_group {groups}")
        single_pad = pad_size // groups
        indices = []
        for t in targets:
            gt = torch.arange(len(t["labels"]), dtype=torch.int64).repeat(groups)
            slot = (torch.arange(groups, dtype=torch.int64) * single_pad).repeat_interleave(len(t["labels"])) + gt
            indices.append((slot, gt))
        return indices

    def forward(self, outputs: Dict, targets: Sequence[Dict], return_indices: bool = False):
        """
        Returns:
            dict of unweighted scalar terms; with ``return_indices`` also a dict of the Hungarian
            assignments per output set (``"last"``, ``"aux_0"``..., ``"interm"``).
        """
        device = outputs["pred_logits"].device
        num_boxes = self._num_boxes(targets, device)
        dn_meta: Optional[Dict] = outputs.get("dn_meta")
        with_dn = self.training and bool(dn_meta) and dn_meta.get("pad_size", 0) > 0
        dn_outputs = dn_meta.get("output_known_lbs_bboxes") if with_dn else None
        if dn_outputs is not None:
            dn_indices = self.denoising_indices(targets, dn_meta)
            dn_num_boxes = num_boxes * dn_meta["num_dn_group"]

        def dn_terms(dn_set, suffix):
            if dn_outputs is None:
                return {f"{k}{suffix}": torch.zeros((), device=device) for k in _DN_PLACEHOLDER_KEYS}
            terms = self.output_set_losses(dn_set, targets, dn_indices, dn_num_boxes, with_text=True, log=False)
            return {f"{k}_dn{suffix}": v for k, v in terms.items()}

        matched = {}
        losses = dn_terms(dn_outputs, "")
        matched["last"] = self.matcher(outputs, targets)
        losses.update(self.output_set_losses(outputs, targets, matched["last"], num_boxes, with_text=True, log=True))

        for layer, aux in enumerate(outputs.get("aux_outputs", []) if self.aux_loss else []):
            matched[f"aux_{layer}"] = self.matcher(aux, targets)
            terms = self.output_set_losses(aux, targets, matched[f"aux_{layer}"], num_boxes, with_text=True, log=False)
            losses.update({f"{k}_{layer}": v for k, v in terms.items()})
            dn_aux = dn_outputs["aux_outputs"][layer] if dn_outputs is not None else None
            losses.update(dn_terms(dn_aux, f"_{layer}"))

        if "interm_outputs" in outputs:
            interm = outputs["interm_outputs"]
            matched["interm"] = self.matcher(interm, targets)
            terms = self.output_set_losses(interm, targets, matched["interm"], num_boxes, with_text=False, log=False)
            losses.update({f"{k}_interm": v for k, v in terms.items()})
        return (losses, matched) if return_indices else losses

    def weighted_losses(self, losses: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        """``{name: weight * term}`` for every computed term that has a weight (their sum = official total)."""
        return {k: losses[k] * w for k, w in self.weight_dict.items() if k in losses}
