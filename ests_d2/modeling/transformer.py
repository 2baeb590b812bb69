"""The ESTS transformer: flatten the levels, encode, select the top-k proposals (two-stage), initialise the
recognition slots by RoI pooling (TAQI) and decode."""
import math
from typing import Dict, List, Optional, Tuple

import torch
from detectron2.modeling.poolers import ROIPooler, assign_boxes_to_levels, convert_boxes_to_pooler_format
from detectron2.structures import Boxes
from torch import nn

from .decoder import ESTSDecoder
from .encoder import DeformableEncoder, level_grid
from .layers import MLP, box_cxcywh_to_xyxy, gather_rows
from .recompute import MemoryPolicy, row_mean, shared_autocast_input


class RectangularROIPooler(ROIPooler):
    """detectron2's ``ROIPooler`` for a non-square output size.

    detectron2 0.6 allocates the multi-level output as (M, C, out_h, out_h), which breaks (8, 25) bins;
    only the allocation differs here: level assignment and the per-level ``ROIAlign`` are the library's.
    """

    def forward(self, x: List[torch.Tensor], box_lists: List[Boxes]) -> torch.Tensor:
        if len(x) != len(self.level_poolers):
            raise ValueError(f"expected {len(self.level_poolers)} feature maps, got {len(x)}")
        if len(box_lists) != x[0].size(0):
            raise ValueError(f"{len(box_lists)} box lists for a batch of {x[0].size(0)} feature maps")
        pooler_boxes = convert_boxes_to_pooler_format(box_lists)
        levels = self.box_levels(box_lists)
        output = x[0].new_zeros((pooler_boxes.size(0), x[0].shape[1]) + tuple(self.output_size))
        for level, pooler in enumerate(self.level_poolers):
            inds = torch.nonzero(levels == level, as_tuple=True)[0]
            output.index_put_((inds,), pooler(x[level], pooler_boxes[inds]))
        return output

    def box_levels(self, box_lists: List[Boxes]) -> torch.Tensor:
        """Pooler level (0 = finest) of every box, concatenated over the images."""
        return assign_boxes_to_levels(
            box_lists, self.min_level, self.max_level, self.canonical_box_size, self.canonical_level
        )


def valid_ratios_of(mask: torch.Tensor) -> torch.Tensor:
    """(B, H, W) padding mask -> (B, 2) unpadded fraction (w, h), read on the first row / column."""
    _, height, width = mask.shape
    valid_h = torch.sum(~mask[:, :, 0], 1).float() / height
    valid_w = torch.sum(~mask[:, 0, :], 1).float() / width
    return torch.stack([valid_w, valid_h], -1)


def encoder_proposals(memory, padding_mask, spatial_shapes) -> Tuple[torch.Tensor, torch.Tensor]:
    """Fixed-size proposals centred on every token (DINO "standard" two-stage).

    Args:
        memory: (B, S, D); padding_mask: (B, S); spatial_shapes: L pairs (H_l, W_l).
    Returns:
        masked memory (B, S, D) (padded or invalid tokens zeroed) and proposals (B, S, 4) in logit
        space, +inf on padded or invalid tokens (a proposal is valid when cx, cy, w, h are all in
        (0.01, 0.99)).
    """
    batch = memory.shape[0]
    proposals = []
    start = 0
    for level, (height, width) in enumerate(spatial_shapes):
        level_mask = padding_mask[:, start:start + height * width].view(batch, height, width)
        valid_h = torch.sum(~level_mask[:, :, 0], 1)
        valid_w = torch.sum(~level_mask[:, 0, :], 1)
        grid_y, grid_x = level_grid(height, width, memory.device)
        grid = torch.stack([grid_x, grid_y], -1)  # (H, W, 2)
        scale = torch.stack([valid_w, valid_h], 1).view(batch, 1, 1, 2)
        grid = (grid.unsqueeze(0).expand(batch, -1, -1, -1) + 0.5) / scale
        wh = torch.ones_like(grid) * (0.05 * 2.0**level)
        proposals.append(torch.cat((grid, wh), -1).view(batch, -1, 4))
        start = start + height * width  # not +=: with traced sizes (ONNX export) start is a tensor
    proposals = torch.cat(proposals, 1)
    valid = ((proposals > 0.01) & (proposals < 0.99)).all(-1, keepdim=True)
    proposals = torch.log(proposals / (1 - proposals))
    invalid = padding_mask.unsqueeze(-1) | ~valid
    proposals = proposals.masked_fill(invalid, float("inf"))
    return memory.masked_fill(invalid, 0.0), proposals


class ESTSTransformer(nn.Module):
    """Encoder, two-stage query selection, RoI recognition-query initialisation and decoder.

    Args:
        d_model, nhead, num_encoder_layers, num_decoder_layers, dim_feedforward, dropout,
        num_feature_levels, enc_n_points, dec_n_points: transformer sizes.
        num_queries: matching queries (top-k proposals).
        num_classes, voc_size, max_text_len: head sizes.
        roi_output_size: (rows, cols) RoIAlign bins; cols must equal ``max_text_len``.
        num_roi_levels: finest projected levels the RoI pooler reads (3: stride 4/8/16 for 5 levels).
        sample_in_fp32: deformable sampling in float32 under autocast (MODEL.ESTS.DEFORM_ATTN_FP32).
        policy: what backward recomputes instead of autograd keeping it (``recompute.MemoryPolicy``), handed
            unchanged to every layer.
    """

    def __init__(self, *, d_model: int, nhead: int, num_encoder_layers: int, num_decoder_layers: int,
                 dim_feedforward: int, dropout: float, num_feature_levels: int, enc_n_points: int,
                 dec_n_points: int, num_queries: int, num_classes: int, voc_size: int, max_text_len: int,
                 roi_output_size: Tuple[int, int], num_roi_levels: int = 3, sample_in_fp32: bool = True,
                 policy: MemoryPolicy = MemoryPolicy()):
        super().__init__()
        if roi_output_size[1] != max_text_len:
            raise ValueError(
                f"MODEL.ESTS.ROI_OUTPUT_SIZE columns ({roi_output_size[1]}) must equal MAX_TEXT_LEN ({max_text_len}):"
                " every RoI column initialises one recognition slot"
            )
        if num_feature_levels < num_roi_levels:
            raise ValueError(f"MODEL.ESTS.NUM_FEATURE_LEVELS ({num_feature_levels}) must be at least {num_roi_levels}: "
                             "the recognition queries are pooled from the finest three projected levels")
        self.d_model = d_model
        self.num_queries = num_queries
        self.level_embed = nn.Parameter(torch.empty(num_feature_levels, d_model))
        self.policy = policy
        self.encoder = DeformableEncoder(
            num_encoder_layers, policy, d_model=d_model, d_ffn=dim_feedforward, n_levels=num_feature_levels,
            n_heads=nhead, n_points=enc_n_points, dropout=dropout, sample_in_fp32=sample_in_fp32,
        )
        self.decoder = ESTSDecoder(
            num_layers=num_decoder_layers, d_model=d_model, d_ffn=dim_feedforward, n_levels=num_feature_levels,
            n_heads=nhead, n_points=dec_n_points, dropout=dropout, num_classes=num_classes, voc_size=voc_size,
            max_text_len=max_text_len, sample_in_fp32=sample_in_fp32, policy=policy,
        )
        self.tgt_embed = nn.Embedding(num_queries, d_model)
        self.enc_output = nn.Linear(d_model, d_model)
        self.enc_output_norm = nn.LayerNorm(d_model)
        self.enc_out_class_embed = nn.Linear(d_model, num_classes)
        self.enc_out_bbox_embed = MLP(d_model, d_model, 4, 3)
        # [QUIRK] the finest RoI level is declared stride 8 whatever its real stride; the boxes are scaled x8
        # in level-0 units below, so sampling stays geometrically right and only the level assignment
        # sees boxes twice their real size (5 levels).
        self.pooler = RectangularROIPooler(
            output_size=tuple(roi_output_size), scales=[1.0 / 2 ** (3 + i) for i in range(num_roi_levels)],
            sampling_ratio=1, pooler_type="ROIAlignV2",
        )
        self.num_roi_levels = num_roi_levels
        self._reset_parameters()

    def _reset_parameters(self):
        """Official initialisation: xavier on every matrix, deformable attention and heads re-initialised."""
        for p in self.parameters():
            if p.dim() > 1:
                nn.init.xavier_uniform_(p)
        for module in self.modules():
            if hasattr(module, "_reset_parameters") and module is not self:
                module._reset_parameters()
        nn.init.normal_(self.level_embed)
        prior_bias = -math.log((1 - 0.01) / 0.01)
        decoder = self.decoder
        for cls in (decoder.class_embed, self.enc_out_class_embed):
            nn.init.constant_(cls.bias, prior_bias)
        for mlp in (decoder.bbox_embed, decoder.polygon_embed, self.enc_out_bbox_embed):
            nn.init.zeros_(mlp.layers[-1].weight)
            nn.init.zeros_(mlp.layers[-1].bias)
        for linear in (decoder.rec_cls, decoder.rec_proj):
            linear.reset_parameters()

    def forward(self, srcs: List[torch.Tensor], masks: List[torch.Tensor], pos_embeds: List[torch.Tensor],
                dn_content: Optional[torch.Tensor] = None, dn_boxes_unsig: Optional[torch.Tensor] = None,
                instance_mask: Optional[torch.Tensor] = None) -> Dict:
        """
        Args:
            srcs, masks, pos_embeds: per level (B, D, H_l, W_l), (B, H_l, W_l) bool, (B, D, H_l, W_l).
            dn_content: (B, Nd, D) denoising content, prepended to the matching queries (training).
            dn_boxes_unsig: (B, Nd, 4) denoising boxes in logit space.
            instance_mask: (Nd + Nq, Nd + Nq) bool, True = blocked.
        Returns:
            dict with ``layers`` (per decoder layer outputs, see ``ESTSDecoder``), ``interm_outputs``,
            and what the parity checks read: ``topk_index`` (B, Nq), ``anchors_unsig`` (B, N, 4),
            ``roi_levels`` (B, N).
        """
        spatial_shapes = [tuple(src.shape[-2:]) for src in srcs]
        mask_flat = torch.cat([mask.flatten(1) for mask in masks], 1)
        pos_flat = torch.cat(
            [pos.flatten(2).transpose(1, 2) + self.level_embed[lvl].view(1, 1, -1)
             for lvl, pos in enumerate(pos_embeds)],
            1,
        )
        valid_ratios = torch.stack([valid_ratios_of(m) for m in masks], 1)  # (B, L, 2)
        # the flattened input is made in the call: no name here keeps it through the decoder (under CUDA
        # autocast it is float32 and nothing else keeps it, the first layer keeping a half-precision copy)
        memory = self.encoder(torch.cat([src.flatten(2).transpose(1, 2) for src in srcs], 1), pos_flat,
                              spatial_shapes, valid_ratios, mask_flat)
        topk_index, selected_coords, selected_memory = self._select_queries(memory, mask_flat, spatial_shapes)
        batch = memory.shape[0]
        anchors = selected_coords.detach()
        content = self.tgt_embed.weight[None].expand(batch, -1, -1)
        if dn_boxes_unsig is not None:
            anchors = torch.cat([dn_boxes_unsig, anchors], 1)
            content = torch.cat([dn_content, content], 1)

        roi_features, roi_levels = self._roi_features(srcs[: self.num_roi_levels], anchors, spatial_shapes[0],
                                                      valid_ratios[:, 0])
        layers = self.decoder(content, roi_features, anchors, memory, spatial_shapes, valid_ratios, mask_flat,
                              instance_mask)
        interm = {"pred_logits": self.enc_out_class_embed(selected_memory), "pred_boxes": selected_coords.sigmoid()}
        return {"layers": layers, "interm_outputs": interm, "topk_index": topk_index, "anchors_unsig": anchors,
                "roi_levels": roi_levels}

    def _select_queries(self, memory, padding_mask, spatial_shapes):
        """Two-stage selection: the top-k tokens by their best class logit (padded/invalid tokens compete too).

        A method of its own, so that the (B, S, D) token features it makes are not kept past it: under CUDA
        autocast they are float32, and their readers keep half-precision copies.

        Returns:
            (B, Nq) selected token indices, their (B, Nq, 4) box logits and (B, Nq, D) features.
        """
        output_memory, proposals = encoder_proposals(memory, padding_mask, spatial_shapes)
        output_memory = self.enc_output_norm(self.enc_output(output_memory))
        head_input = shared_autocast_input(output_memory)  # both heads read it: one half-precision copy
        class_logits = self.enc_out_class_embed(head_input())
        coords_unsig = self.enc_out_bbox_embed(head_input()) + proposals
        topk_index = torch.topk(class_logits.max(-1)[0], self.num_queries, dim=1)[1]
        return topk_index, gather_rows(coords_unsig, topk_index), gather_rows(output_memory, topk_index)

    def _roi_features(self, feats, anchors_unsig, level0_shape, level0_valid_ratio):
        """RoIAlign of every instance's box, averaged over the rows: one vector per recognition slot.

        Returns:
            (B, N, T, D) features and (B, N) pooler levels.
        """
        batch, num_inst, _ = anchors_unsig.shape
        boxes = box_cxcywh_to_xyxy(anchors_unsig.sigmoid())
        height0, width0 = level0_shape
        # keep the official float32 operation order (scale by the padded size, then by the valid ratio)
        boxes = boxes * boxes.new_tensor([width0, height0, width0, height0])
        boxes = boxes * level0_valid_ratio.view(batch, 1, 2).repeat(1, 1, 2)
        boxes = torch.clamp(boxes, min=0) * 8
        box_lists = [Boxes(b) for b in boxes]
        pooled = self.pooler(feats, box_lists)  # (B*N, D, rows, T)
        pooled = row_mean(pooled)
        features = pooled.reshape(batch, num_inst, self.d_model, -1).permute(0, 1, 3, 2)
        return features, self.pooler.box_levels(box_lists).view(batch, num_inst)
