"""Export-friendly versions of the three ESTS operations that do not trace to ONNX as written.

Each function computes what the eager op computes, with operators ONNX has, and takes its sizes from tensor
shapes (so a traced graph keeps them dynamic instead of baking the sample image's sizes in):

* deformable attention sampling: the eager path writes the value maps onto a canvas and sums
  ``F.embedding_bag`` bags (no ONNX operator) and trains through a custom autograd Function; here it is the
  official reference math, one ``grid_sample`` per level (ONNX ``GridSample``, opset >= 16);
* RoI pooling: detectron2's ``ROIPooler`` pools each box on one level picked with ``nonzero`` + ``index_put``
  (data-dependent shapes); here every box is pooled on every RoI level (ONNX ``RoiAlign``, ``half_pixel`` =
  ``aligned=True``, opset >= 16) and the level's result is kept with ``where``;
* the rows mean after RoI pooling: a custom autograd Function in eager mode, ``avg_pool2d`` here.

``tests/export/test_ops.py`` checks each against the eager op.
"""
from typing import List, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import roi_align

from ..modeling.layers import box_cxcywh_to_xyxy
from ..modeling.ms_deform_attn import MSDeformAttn

__all__ = ["ExportDeformAttn", "grid_sample_deform_attn", "level_sizes", "roi_align_on_levels",
           "roi_features_for_export"]


def level_sizes(spatial_shapes: Sequence[Tuple], dtype=torch.float32) -> torch.Tensor:
    """(L, 2) float (W_l, H_l) of every level; traced sizes (0-d tensors while tracing) stay in the graph."""
    return torch.stack([torch.stack([torch.as_tensor(w), torch.as_tensor(h)]) for h, w in spatial_shapes]).to(dtype)


def grid_sample_deform_attn(value: torch.Tensor, spatial_shapes: Sequence[Tuple], sampling_locations: torch.Tensor,
                            attention_weights: torch.Tensor) -> torch.Tensor:
    """Multi-scale deformable sampling with one ``grid_sample`` per level (spec section 3, official reference).

    Args:
        value: (B, S, M, Dh); spatial_shapes: L pairs (H_l, W_l) (ints, or 0-d tensors while tracing).
        sampling_locations: (B, Lq, M, L, P, 2) normalised (x, y); attention_weights: (B, Lq, M, L, P).
    Returns:
        (B, Lq, M * Dh), as ``ms_deform_attn_sample``.
    """
    batch, _, num_heads, head_dim = value.shape
    _, num_queries, _, num_levels, num_points, _ = sampling_locations.shape
    grids = 2 * sampling_locations - 1
    weights = attention_weights.transpose(1, 2).reshape(batch * num_heads, 1, num_queries, num_levels, num_points)
    output = 0
    start = 0
    for level, (height, width) in enumerate(spatial_shapes):
        end = start + height * width
        value_l = value[:, start:end].flatten(2).transpose(1, 2).reshape(batch * num_heads, head_dim, height, width)
        grid_l = grids[:, :, :, level].transpose(1, 2).flatten(0, 1)  # (B*M, Lq, P, 2)
        samples = F.grid_sample(value_l, grid_l, mode="bilinear", padding_mode="zeros", align_corners=False)
        # summed level by level: no (B*M, Dh, Lq, L*P) tensor of all samples (700 MB for the encoder at 640^2)
        output = output + (samples * weights[..., level, :]).sum(-1)  # (B*M, Dh, Lq)
        start = end
    return output.view(batch, num_heads * head_dim, num_queries).transpose(1, 2)


class ExportDeformAttn(nn.Module):
    """An ``MSDeformAttn`` (its very parameters) whose forward uses ``grid_sample_deform_attn``, inference only.

    Same call signature as ``MSDeformAttn.forward``; the rebuild recipes (training memory savings) are ignored.
    """

    def __init__(self, attention: MSDeformAttn):
        super().__init__()
        self.attention = attention

    def forward(self, query, reference_points, value_input, spatial_shapes, padding_mask=None,
                rebuild_query=None, rebuild_value_input=None):
        del rebuild_query, rebuild_value_input  # backward-only recipes
        attn = self.attention
        batch, num_queries, _ = query.shape
        value = attn.value_proj(value_input)
        if padding_mask is not None:
            value = value.masked_fill(padding_mask[..., None], 0.0)
        value = value.view(batch, value_input.shape[1], attn.n_heads, attn.d_model // attn.n_heads)
        shape = (batch, num_queries, attn.n_heads, attn.n_levels, attn.n_points)
        offsets = attn.sampling_offsets(query).view(*shape, 2)
        weights = attn.attention_weights(query).view(batch, num_queries, attn.n_heads, -1).softmax(-1).view(shape)
        # the eager arithmetic, in its order: reference + offset / (W, H), or centre + offset / P * size * 0.5
        reference = reference_points[:, :, None, :, None, :]
        if reference_points.shape[-1] == 2:
            locations = reference + offsets / level_sizes(spatial_shapes)[:, None]
        elif reference_points.shape[-1] == 4:
            locations = reference[..., :2] + offsets / attn.n_points * reference[..., 2:] * 0.5
        else:
            raise ValueError(f"reference_points must end in 2 or 4 coordinates, got {tuple(reference_points.shape)}")
        output = grid_sample_deform_attn(value, spatial_shapes, locations, weights)
        return attn.output_proj(output)


def roi_align_on_levels(features: List[torch.Tensor], rois: torch.Tensor, levels: torch.Tensor,
                        output_size: Tuple[int, int], scales: Sequence[float], sampling_ratio: int) -> torch.Tensor:
    """``ROIAlignV2`` of every RoI on its own level, without data-dependent shapes.

    Args:
        features: per level (B, C, H_l, W_l); rois: (R, 5) (batch index, x0, y0, x1, y1);
        levels: (R,) int64 level of every RoI (0 = ``features[0]``).
    Returns:
        (R, C, *output_size), as detectron2's pooler.
    """
    pooled = None
    for level in reversed(range(len(features))):  # the finest level last: it wins where() for level 0
        level_out = roi_align(features[level], rois, output_size, spatial_scale=scales[level],
                              sampling_ratio=sampling_ratio, aligned=True)
        pooled = level_out if pooled is None else torch.where((levels == level).view(-1, 1, 1, 1), level_out, pooled)
    return pooled


def roi_features_for_export(transformer, feats: List[torch.Tensor], anchors_unsig: torch.Tensor,
                            level0_shape: Tuple, level0_valid_ratio: torch.Tensor):
    """``ESTSTransformer._roi_features`` with ``roi_align_on_levels`` and ``avg_pool2d`` (same arithmetic).

    Returns:
        (B, N, T, D) recognition-slot features and (B, N) pooler levels.
    """
    batch, num_inst, _ = anchors_unsig.shape
    boxes = box_cxcywh_to_xyxy(anchors_unsig.sigmoid())
    height0, width0 = (torch.as_tensor(s, dtype=boxes.dtype) for s in level0_shape)
    # the eager float32 operation order: scale by the padded size, then by the valid ratio, clamp, x8
    boxes = boxes * torch.stack([width0, height0, width0, height0])
    boxes = boxes * level0_valid_ratio.view(batch, 1, 2).repeat(1, 1, 2)
    boxes = torch.clamp(boxes, min=0) * 8
    pooler = transformer.pooler
    box_levels = level_of_boxes(boxes.flatten(0, 1), pooler)
    image_index = torch.arange(batch, dtype=boxes.dtype, device=boxes.device).repeat_interleave(num_inst)
    rois = torch.cat([image_index[:, None], boxes.flatten(0, 1)], dim=1)
    scales = [p.spatial_scale for p in pooler.level_poolers]
    sampling_ratio = pooler.level_poolers[0].sampling_ratio
    pooled = roi_align_on_levels(feats, rois, box_levels, tuple(pooler.output_size), scales, sampling_ratio)
    pooled = F.avg_pool2d(pooled, (pooler.output_size[0], 1), stride=1)  # a constant kernel: ONNX needs one
    features = pooled.reshape(batch, num_inst, transformer.d_model, -1).permute(0, 1, 3, 2)
    return features, box_levels.view(batch, num_inst)


def level_of_boxes(boxes: torch.Tensor, pooler) -> torch.Tensor:
    """detectron2's ``assign_boxes_to_levels`` rule on (R, 4) xyxy boxes (no ``Boxes`` list)."""
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    levels = torch.floor(pooler.canonical_level + torch.log2(torch.sqrt(areas) / pooler.canonical_box_size + 1e-8))
    levels = torch.clamp(levels, min=pooler.min_level, max=pooler.max_level)
    return levels.to(torch.int64) - pooler.min_level
