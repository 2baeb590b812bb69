"""Contrastive denoising (DINO CDN) queries of ESTS training (spec section 1.9).

Every ground truth of the batch is copied into ``num_dn_group`` groups, each with a positive copy (box
corners moved by less than half the box size) and a negative copy (moved by 1x to 2x half the box size).
Per image the DN slots form blocks of ``g`` = max GTs per image: block 2i holds the positives of group i,
block 2i+1 its negatives, the image's GTs in order; slots of images with fewer GTs stay empty (zero
content, zero logit box). Labels of the copies are flipped to a random class with probability
``label_noise_ratio / 2``. The decoder sees DN queries first, then the matching queries, with an
attention mask that hides DN queries from the matching queries and DN groups from each other.

Random numbers come from torch's global generator in the official order (label coin, new labels, box
signs, box magnitudes), so ``torch.manual_seed(s)`` before the call reproduces the official noise.
"""
from typing import Dict, List, Optional, Tuple

import torch
from torch import nn

from detectron2.config import configurable

from .layers import inverse_sigmoid

__all__ = ["ContrastiveDenoising", "build_denoising", "split_denoising_outputs", "denoising_attention_mask"]


def denoising_attention_mask(pad_size: int, num_groups: int, num_queries: int, device=None) -> torch.Tensor:
    """(pad_size + Nq, pad_size + Nq) bool mask of the inter-instance attention, True = blocked.

    Matching queries (rows >= pad_size) cannot see any DN query; the DN queries of one group (a block of
    ``pad_size // num_groups`` rows) cannot see the DN queries of other groups; everyone sees the
    matching queries.
    """
    size = pad_size + num_queries
    mask = torch.zeros(size, size, dtype=torch.bool, device=device)
    mask[pad_size:, :pad_size] = True
    if pad_size > 0:
        group = torch.arange(pad_size, device=device) // (pad_size // num_groups)
        mask[:pad_size, :pad_size] = group[:, None] != group[None, :]
    return mask


class ContrastiveDenoising(nn.Module):
    """Builds the DN queries of a training batch. Holds no parameters: the label embedding is the model's.

    ``forward(targets, label_enc, recorded_noise=None)``:

    Args:
        targets: B official target dicts with ``labels`` (n_i,) int64 and ``boxes`` (n_i, 4) normalised cxcywh.
        label_enc: ``nn.Embedding`` giving the content (D channels) of a (noised) label.
        recorded_noise: optional ``(slot_label, slot_boxes_unsig)``, (B, Nd) int64 (-1 = empty slot) and
            (B, Nd, 4): use these noised labels / logit boxes instead of drawing noise (parity checks
            against recorded official passes). Empty slots must agree with the layout.
    Returns:
        dict with ``content`` (B, Nd, D), ``boxes_unsig`` (B, Nd, 4) logit-space boxes, ``attn_mask``
        (Nd + Nq, Nd + Nq) bool (True = blocked), ``dn_meta`` (``pad_size`` = Nd, ``num_dn_group``), and the
        layout: ``slot_label`` (B, Nd) noised label or -1, ``slot_gt_index`` (B, Nd) GT index or -1,
        ``slot_is_positive`` (B, Nd) bool.
    """

    @configurable
    def __init__(self, *, dn_number: int, label_noise_ratio: float, box_noise_scale: float, num_classes: int,
                 num_queries: int):
        """
        Args:
            dn_number: DN budget; groups = 2 * dn_number // (2 * g) (official rule, at least 1).
            label_noise_ratio: a copy's label is replaced by a random class with probability ratio / 2.
            box_noise_scale: scale of the corner noise, in half box sizes (0 = no box noise).
            num_classes: box classes C (random labels are drawn in [0, C)).
            num_queries: matching queries Nq (size of the attention mask).
        """
        super().__init__()
        self.dn_number = dn_number
        self.label_noise_ratio = label_noise_ratio
        self.box_noise_scale = box_noise_scale
        self.num_classes = num_classes
        self.num_queries = num_queries

    @classmethod
    def from_config(cls, cfg):
        e = cfg.MODEL.ESTS
        return {
            "dn_number": e.DN.NUMBER,
            "label_noise_ratio": e.DN.LABEL_NOISE_RATIO,
            "box_noise_scale": e.DN.BOX_NOISE_SCALE,
            "num_classes": e.NUM_CLASSES,
            "num_queries": e.NUM_QUERIES,
        }

    def extra_repr(self) -> str:
        return (f"dn_number={self.dn_number}, label_noise_ratio={self.label_noise_ratio}, "
                f"box_noise_scale={self.box_noise_scale}, num_classes={self.num_classes}")

    def num_groups(self, max_gt_per_image: int) -> int:
        """Official rule: (2 dn_number) // (2 g) if 2 dn_number >= 100, else 2 dn_number; at least 1 (1 if g = 0)."""
        budget = 2 * self.dn_number
        if max_gt_per_image == 0:
            return 1
        if budget >= 100:
            budget = budget // (2 * max_gt_per_image)
        return max(budget, 1)

    def _draw_noise(self, labels: torch.Tensor, boxes: torch.Tensor, is_negative: torch.Tensor):
        """Noised labels and logit boxes of the copies (official draw order on the global generator)."""
        labels = labels.clone()
        if self.label_noise_ratio > 0:
            coin = torch.rand(labels.shape, device=labels.device)
            flipped = torch.nonzero(coin < self.label_noise_ratio * 0.5).view(-1)
            labels[flipped] = torch.randint(0, self.num_classes, flipped.shape, dtype=flipped.dtype,
                                            device=labels.device)
        if self.box_noise_scale > 0:
            half_wh = boxes[:, 2:] / 2
            corners = torch.cat([boxes[:, :2] - half_wh, boxes[:, :2] + half_wh], dim=1)
            sign = torch.randint(0, 2, boxes.shape, dtype=torch.float32, device=boxes.device) * 2.0 - 1.0
            magnitude = torch.rand(boxes.shape, device=boxes.device)
            magnitude[is_negative] += 1.0  # negatives: 1x..2x the half size, positives: < 1x
            magnitude *= sign
            corners = corners + magnitude * half_wh.repeat(1, 2) * self.box_noise_scale
            corners = corners.clamp(min=0.0, max=1.0)
            boxes = torch.cat([(corners[:, :2] + corners[:, 2:]) / 2, corners[:, 2:] - corners[:, :2]], dim=1)
        return labels, inverse_sigmoid(boxes)

    def forward(self, targets: List[Dict], label_enc: nn.Embedding,
                recorded_noise: Optional[Tuple[torch.Tensor, torch.Tensor]] = None) -> Dict:
        device = label_enc.weight.device
        counts = [len(t["labels"]) for t in targets]
        batch, max_gt = len(targets), max(counts, default=0)
        groups = self.num_groups(max_gt)
        copies = 2 * groups  # one positive and one negative copy per group
        pad_size = copies * max_gt
        hidden = label_enc.embedding_dim

        # The copies in the official (copy-major, then batch) order, which fixes the random-number mapping.
        gt_labels = torch.cat([t["labels"].long() for t in targets]).to(device)
        gt_boxes = torch.cat([t["boxes"].float() for t in targets]).to(device)
        image_of_gt = torch.cat([torch.full((n,), i, dtype=torch.int64) for i, n in enumerate(counts)]).to(device)
        index_in_image = torch.cat([torch.arange(n) for n in counts]).to(device)
        copy_id = torch.arange(copies, device=device).repeat_interleave(len(gt_labels))
        copy_image = image_of_gt.repeat(copies)
        copy_slot = index_in_image.repeat(copies) + copy_id * max_gt
        copy_gt = index_in_image.repeat(copies)
        copy_is_negative = copy_id % 2 == 1

        slot_label = torch.full((batch, pad_size), -1, dtype=torch.int64, device=device)
        slot_gt_index = torch.full((batch, pad_size), -1, dtype=torch.int64, device=device)
        slot_is_positive = torch.zeros((batch, pad_size), dtype=torch.bool, device=device)
        slot_gt_index[copy_image, copy_slot] = copy_gt
        slot_is_positive[copy_image, copy_slot] = ~copy_is_negative
        boxes_unsig = torch.zeros((batch, pad_size, 4), device=device)

        if recorded_noise is None:
            labels, copy_boxes_unsig = self._draw_noise(gt_labels.repeat(copies), gt_boxes.repeat(copies, 1),
                                                        copy_is_negative)
            slot_label[copy_image, copy_slot] = labels
            boxes_unsig[copy_image, copy_slot] = copy_boxes_unsig
        else:
            recorded_label, recorded_boxes = (r.to(device) for r in recorded_noise)
            if recorded_label.shape != slot_label.shape or not torch.equal(recorded_label < 0, slot_gt_index < 0):
                raise ValueError(f"recorded DN noise: slot_label of shape {tuple(recorded_label.shape)} does not "
                                 f"fit the layout of these targets ({tuple(slot_label.shape)}, empty slots)")
            slot_label = recorded_label.clone()
            boxes_unsig = recorded_boxes.to(boxes_unsig.dtype).clone()

        content = label_enc.weight.new_zeros((batch, pad_size, hidden))
        filled = slot_label >= 0
        content[filled] = label_enc(slot_label[filled])
        return {
            "content": content,
            "boxes_unsig": boxes_unsig,
            "attn_mask": denoising_attention_mask(pad_size, groups, self.num_queries, device),
            "dn_meta": {"pad_size": pad_size, "num_dn_group": groups},
            "slot_label": slot_label,
            "slot_gt_index": slot_gt_index,
            "slot_is_positive": slot_is_positive,
        }


def build_denoising(cfg) -> Optional[ContrastiveDenoising]:
    """The DN query builder, or None when ``MODEL.ESTS.DN.ENABLED`` is off."""
    return ContrastiveDenoising(cfg) if cfg.MODEL.ESTS.DN.ENABLED else None


def split_denoising_outputs(layers: List[Dict[str, torch.Tensor]], dn_meta: Dict):
    """Split per-layer outputs of a DN forward into the matching part and the DN part.

    Args:
        layers: one dict per decoder layer (``pred_logits``, ``pred_boxes``, ``pred_beziers``, ``pred_rec``,
            query axis 1 of length pad_size + Nq).
        dn_meta: ``pad_size`` and ``num_dn_group`` of the DN queries.
    Returns:
        ``(matching_layers, dn_meta)``: the layers without the DN queries, and a copy of ``dn_meta`` with
        ``output_known_lbs_bboxes`` = the DN part of the last layer plus ``aux_outputs`` (earlier layers).
        With ``pad_size == 0`` nothing is split and no DN outputs are attached (the criterion then reports
        its zero placeholders), as in the official ``dn_post_process``.
    """
    dn_meta = dict(dn_meta)
    pad_size = dn_meta["pad_size"]
    if pad_size == 0:
        return layers, dn_meta
    dn_layers = [{k: v[:, :pad_size] for k, v in layer.items()} for layer in layers]
    matching_layers = [{k: v[:, pad_size:] for k, v in layer.items()} for layer in layers]
    dn_meta["output_known_lbs_bboxes"] = {**dn_layers[-1], "aux_outputs": dn_layers[:-1]}
    return matching_layers, dn_meta
