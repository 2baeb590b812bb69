"""Deformable transformer encoder (6 post-norm layers, no final norm)."""
import operator
from functools import partial
from typing import List, Tuple

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from .layers import applied_to_rebuilt, feed_forward, gather_rows, residual_norm
from .ms_deform_attn import MSDeformAttn


class DeformableEncoderLayer(nn.Module):
    """``x = LN1(x + MSDeformAttn(x + pos, x))``; ``x = LN2(x + FFN(x))``."""

    def __init__(self, d_model: int, d_ffn: int, n_levels: int, n_heads: int, n_points: int,
                 dropout: float = 0.0, attn_fp32: bool = True, attn_recompute: bool = False,
                 ffn_recompute: bool = False, rebuild_inputs: bool = True):
        super().__init__()
        self.ffn_recompute = ffn_recompute
        # attention queries and the second norm's input rebuilt in backward (exact), except in
        # activation-checkpointed layers, where the checkpoint handles every saved tensor
        self.rebuild_inputs = rebuild_inputs
        self.self_attn = MSDeformAttn(d_model, n_levels, n_heads, n_points, sample_in_fp32=attn_fp32,
                                      recompute_sampling=attn_recompute, rebuild_inputs=rebuild_inputs)
        self.dropout1 = nn.Dropout(dropout)
        self.norm1 = nn.LayerNorm(d_model)
        self.linear1 = nn.Linear(d_model, d_ffn)
        self.dropout2 = nn.Dropout(dropout)
        self.linear2 = nn.Linear(d_ffn, d_model)
        self.dropout3 = nn.Dropout(dropout)
        self.norm2 = nn.LayerNorm(d_model)

    def forward(self, src, pos, reference_points, spatial_shapes, padding_mask, token_index=None, rebuild_src=None):
        """
        Args:
            src, pos: (B, Lq, C) states and position encodings of the query tokens.
            reference_points: (B, Lq, L, 2); spatial_shapes: L pairs; padding_mask: (B, S).
            token_index: (B, Lq) position of every query token in the flattened maps, or None when the
                queries are all S tokens in order.
            rebuild_src: how to get src back in backward without keeping it (the previous layer's
                ``rebuild_output``), or None.
        Returns:
            the (B, Lq, C) output, and ``rebuild_output``: how to get it back (from what the norms keep anyway).
        """
        num_tokens = padding_mask.shape[1]
        # query src + pos and value map: made of tensors that can be had again in backward (src from the
        # previous layer's norms, pos kept by these recipes), so the attention need not keep them
        rebuild_query = rebuild_value_input = None
        if rebuild_src is not None:
            rebuild_query = partial(applied_to_rebuilt, operator.add, rebuild_src, pos)
            rebuild_value_input = partial(applied_to_rebuilt, _value_map, rebuild_src, token_index, num_tokens)
        attn = self.self_attn(src + pos, reference_points, _value_map(src, token_index, num_tokens),
                              spatial_shapes, padding_mask, rebuild_query, rebuild_value_input)
        # Under CUDA autocast the stream is float32 and the updates half precision: the norms keep the updates
        # and rebuild their input sums from src, itself rebuilt through the earlier layers down to the first
        # layer's first norm, whose input is kept. In float32 (and CPU autocast) each norm keeps its input sum.
        src, rebuild_src = residual_norm(self.norm1, src, self.dropout1(attn), rebuild_src,
                                         allow_rebuild=self.rebuild_inputs)
        ffn = feed_forward(src, self.linear1, self.dropout2, self.linear2, self.ffn_recompute, rebuild_src)
        return residual_norm(self.norm2, src, self.dropout3(ffn), rebuild_src, allow_rebuild=self.rebuild_inputs)


def _value_map(src: torch.Tensor, token_index, num_tokens: int) -> torch.Tensor:
    """(B, S, C) map of the attention's values: the query tokens at their flattened positions, zero elsewhere."""
    if token_index is None:
        return src
    index = token_index[..., None].expand(-1, -1, src.shape[-1])
    return src.new_zeros(src.shape[0], num_tokens, src.shape[-1]).scatter(1, index, src)


def encoder_reference_points(spatial_shapes: List[Tuple[int, int]], valid_ratios: torch.Tensor) -> torch.Tensor:
    """Token centres normalised by each level's valid extent, re-expressed for every level.

    Args:
        spatial_shapes: L pairs (H_l, W_l).
        valid_ratios: (B, L, 2) unpadded fraction (w, h) of every level.
    Returns:
        (B, S, L, 2) reference points (x, y) in padded-map units of each level.
    """
    points = []
    device = valid_ratios.device
    for level, (height, width) in enumerate(spatial_shapes):
        ref_y, ref_x = torch.meshgrid(
            torch.linspace(0.5, height - 0.5, height, dtype=torch.float32, device=device),
            torch.linspace(0.5, width - 0.5, width, dtype=torch.float32, device=device),
            indexing="ij",
        )
        ref_y = ref_y.reshape(-1)[None] / (valid_ratios[:, None, level, 1] * height)
        ref_x = ref_x.reshape(-1)[None] / (valid_ratios[:, None, level, 0] * width)
        points.append(torch.stack((ref_x, ref_y), -1))
    return torch.cat(points, 1)[:, :, None] * valid_ratios[:, None]


class DeformableEncoder(nn.Module):
    def __init__(self, num_layers: int, activation_checkpoint: bool = False, **layer_kwargs):
        super().__init__()
        # a checkpointed layer's tensors are dropped and recomputed by the checkpoint: no rebuild recipes inside
        self.layers = nn.ModuleList([DeformableEncoderLayer(rebuild_inputs=not activation_checkpoint,
                                                            **layer_kwargs) for _ in range(num_layers)])
        self.activation_checkpoint = activation_checkpoint

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
        rebuild_output = None  # the encoder's input is not rebuilt: only layer outputs are
        for layer in self.layers:
            args = (output, pos, reference_points, spatial_shapes, padding_mask, token_index)
            if self.activation_checkpoint and self.training:
                # the rebuild recipe is dropped at once: it would keep a tensor the checkpoint frees
                output = checkpoint(layer, *args, use_reentrant=False)[0]
            else:
                output, rebuild_output = layer(*args, rebuild_output)
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
