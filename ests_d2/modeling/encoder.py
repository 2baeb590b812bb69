"""Deformable transformer encoder (6 post-norm layers, no final norm)."""
import operator
from typing import List, Optional, Tuple

import torch
from torch import nn

from .layers import gather_rows
from .ms_deform_attn import MSDeformAttn
from .recompute import MemoryPolicy, Recipe, feed_forward, residual_norm, run_layer, then


class DeformableEncoderLayer(nn.Module):
    """``x = LN1(x + MSDeformAttn(x + pos, x))``; ``x = LN2(x + FFN(x))``."""

    def __init__(self, d_model: int, d_ffn: int, n_levels: int, n_heads: int, n_points: int,
                 dropout: float = 0.0, sample_in_fp32: bool = True, policy: MemoryPolicy = MemoryPolicy()):
        super().__init__()
        self.policy = policy
        self.self_attn = MSDeformAttn(d_model, n_levels, n_heads, n_points, sample_in_fp32, policy)
        self.dropout1 = nn.Dropout(dropout)
        self.norm1 = nn.LayerNorm(d_model)
        self.linear1 = nn.Linear(d_model, d_ffn)
        self.dropout2 = nn.Dropout(dropout)
        self.linear2 = nn.Linear(d_ffn, d_model)
        self.dropout3 = nn.Dropout(dropout)
        self.norm2 = nn.LayerNorm(d_model)

    def forward(self, src, pos, reference_points, spatial_shapes, padding_mask, token_index=None,
                src_recipe: Optional[Recipe] = None):
        """
        Args:
            src, pos: (B, Lq, C) states and position encodings of the query tokens.
            reference_points: (B, Lq, L, 2); spatial_shapes: L pairs; padding_mask: (B, S).
            token_index: (B, Lq) position of every query token in the flattened maps, or None when the
                queries are all S tokens in order.
            src_recipe: the recipe of src (the previous layer's output recipe), or None.
        Returns:
            the (B, Lq, C) output and its recipe (from what the norms keep anyway; None when recipes are off).
        """
        num_tokens = padding_mask.shape[1]
        # query src + pos and value map: made of tensors that can be had again in backward (src from the
        # previous layer's norms, pos kept by these recipes), so the attention need not keep them
        attn = self.self_attn(src + pos, reference_points, _value_map(src, token_index, num_tokens), spatial_shapes,
                              padding_mask, query_recipe=then(src_recipe, operator.add, pos),
                              value_input_recipe=then(src_recipe, _value_map, token_index, num_tokens))
        # Under CUDA autocast the stream is float32 and the updates half precision: the norms keep the updates
        # and redo their input sums from src, itself redone through the earlier layers down to the first
        # layer's first norm, whose input is kept. In float32 (and CPU autocast) each norm keeps its input sum.
        src, src_recipe = residual_norm(self.norm1, src, self.dropout1(attn), src_recipe, self.policy)
        ffn = feed_forward(src, self.linear1, self.dropout2, self.linear2, self.policy, src_recipe)
        return residual_norm(self.norm2, src, self.dropout3(ffn), src_recipe, self.policy)


def _value_map(src: torch.Tensor, token_index, num_tokens: int) -> torch.Tensor:
    """(B, S, C) map of the attention's values: the query tokens at their flattened positions, zero elsewhere."""
    if token_index is None:
        return src
    index = token_index[..., None].expand(-1, -1, src.shape[-1])
    return src.new_zeros(src.shape[0], num_tokens, src.shape[-1]).scatter(1, index, src)


def level_grid(height, width, device) -> Tuple[torch.Tensor, torch.Tensor]:
    """(H, W) float32 row and column indices of a feature level.

    The official code builds token grids with ``torch.linspace(0, n - 1, n)`` (and ``linspace(0.5, n - 0.5, n)``);
    its step is exactly 1, so every value is an exact float32 integer (plus 0.5) and ``arange`` gives the same bits.
    ``arange`` also accepts traced sizes, so the ONNX export runs these functions unchanged with a dynamic image size.
    """
    rows = torch.arange(height, dtype=torch.float32, device=device)
    cols = torch.arange(width, dtype=torch.float32, device=device)
    return torch.meshgrid(rows, cols, indexing="ij")


def encoder_reference_points(spatial_shapes: List[Tuple[int, int]], valid_ratios: torch.Tensor) -> torch.Tensor:
    """Token centres normalised by each level's valid extent, re-expressed for every level.

    Args:
        spatial_shapes: L pairs (H_l, W_l).
        valid_ratios: (B, L, 2) unpadded fraction (w, h) of every level.
    Returns:
        (B, S, L, 2) reference points (x, y) in padded-map units of each level.
    """
    points = []
    for level, (height, width) in enumerate(spatial_shapes):
        ref_y, ref_x = (g + 0.5 for g in level_grid(height, width, valid_ratios.device))
        ref_y = ref_y.reshape(-1)[None] / (valid_ratios[:, None, level, 1] * height)
        ref_x = ref_x.reshape(-1)[None] / (valid_ratios[:, None, level, 0] * width)
        points.append(torch.stack((ref_x, ref_y), -1))
    return torch.cat(points, 1)[:, :, None] * valid_ratios[:, None]


class DeformableEncoder(nn.Module):
    def __init__(self, num_layers: int, policy: MemoryPolicy = MemoryPolicy(), **layer_kwargs):
        super().__init__()
        self.policy = policy
        self.layers = nn.ModuleList([DeformableEncoderLayer(policy=policy, **layer_kwargs) for _ in range(num_layers)])

    def forward(self, src, pos, spatial_shapes, valid_ratios, padding_mask):
        """
        Args:
            src, pos: (B, S, C) flattened features and level-aware position encodings.
            spatial_shapes: L pairs (H_l, W_l); valid_ratios: (B, L, 2); padding_mask: (B, S).
        Returns:
            memory (B, S, C), zero on padding.
        """
        reference_points = encoder_reference_points(spatial_shapes, valid_ratios)
        # Padded tokens are dead ends: their values are masked out of every attention and the two-stage
        # selection zeroes them, so only the valid tokens are run as queries (packed, valid first).
        token_index = _valid_token_index(padding_mask)
        output = src
        if token_index is not None:
            output, pos, reference_points = (gather_rows(t, token_index) for t in (src, pos, reference_points))
        output_recipe = None  # the encoder's input has no recipe: only layer outputs do
        for layer in self.layers:
            output, output_recipe = run_layer(self.policy, layer, output, pos, reference_points, spatial_shapes,
                                              padding_mask, token_index, input_recipe=output_recipe)
        if token_index is None:
            return output.masked_fill(padding_mask[..., None], 0.0)
        index = token_index[..., None].expand(-1, -1, output.shape[-1])
        memory = output.new_zeros(src.shape).scatter(1, index, output)
        return memory.masked_fill(padding_mask[..., None], 0.0)


def _valid_token_index(padding_mask: torch.Tensor):
    """(B, Lq) flattened positions of the valid tokens of every image, in order, or None when nothing is saved.

    Images with fewer valid tokens than the largest are filled up with some of their padded positions (their
    results are discarded).
    """
    num_valid = int((~padding_mask).sum(1).max())
    if num_valid == padding_mask.shape[1]:
        return None
    return torch.argsort(padding_mask.to(torch.uint8), dim=1, stable=True)[:, :num_valid]
