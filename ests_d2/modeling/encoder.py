"""Deformable transformer encoder (6 post-norm layers, no final norm)."""
from typing import List, Tuple

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from .ms_deform_attn import MSDeformAttn


class DeformableEncoderLayer(nn.Module):
    """``x = LN1(x + MSDeformAttn(x + pos, x))``; ``x = LN2(x + FFN(x))``."""

    def __init__(self, d_model: int, d_ffn: int, n_levels: int, n_heads: int, n_points: int,
                 dropout: float = 0.0, attn_fp32: bool = True):
        super().__init__()
        self.self_attn = MSDeformAttn(d_model, n_levels, n_heads, n_points, sample_in_fp32=attn_fp32)
        self.dropout1 = nn.Dropout(dropout)
        self.norm1 = nn.LayerNorm(d_model)
        self.linear1 = nn.Linear(d_model, d_ffn)
        self.dropout2 = nn.Dropout(dropout)
        self.linear2 = nn.Linear(d_ffn, d_model)
        self.dropout3 = nn.Dropout(dropout)
        self.norm2 = nn.LayerNorm(d_model)

    def forward(self, src, pos, reference_points, spatial_shapes, padding_mask):
        attn = self.self_attn(src + pos, reference_points, src, spatial_shapes, padding_mask)
        src = self.norm1(src + self.dropout1(attn))
        # in place: the Linear output is not needed by its backward
        ffn = self.linear2(self.dropout2(torch.relu_(self.linear1(src))))
        return self.norm2(src + self.dropout3(ffn))


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
        self.layers = nn.ModuleList([DeformableEncoderLayer(**layer_kwargs) for _ in range(num_layers)])
        self.activation_checkpoint = activation_checkpoint

    def forward(self, src, pos, spatial_shapes, valid_ratios, padding_mask):
        """
        Args:
            src, pos: (B, S, C) flattened features and level-aware position encodings.
            spatial_shapes: L pairs (H_l, W_l); valid_ratios: (B, L, 2); padding_mask: (B, S).
        Returns:
            memory (B, S, C).
        """
        reference_points = encoder_reference_points(spatial_shapes, valid_ratios)
        output = src
        for layer in self.layers:
            if self.activation_checkpoint and self.training:
                output = checkpoint(layer, output, pos, reference_points, spatial_shapes, padding_mask,
                                    use_reentrant=False)
            else:
                output = layer(output, pos, reference_points, spatial_shapes, padding_mask)
        return output
