"""Multi-scale deformable attention (Deformable DETR), pure PyTorch.

The sampling is the official reference math: bilinear ``grid_sample`` with zeros padding and
``align_corners=False`` per level, weighted by per-head softmax attention. Levels are accumulated one at a
time so the (B*M, D, Lq, L*P) stack of the reference implementation is never materialised.
"""
import math
from typing import List, Tuple

import torch
import torch.nn.functional as F
from torch import nn


def ms_deform_attn_sample(
    value: torch.Tensor,
    spatial_shapes: List[Tuple[int, int]],
    sampling_locations: torch.Tensor,
    attention_weights: torch.Tensor,
) -> torch.Tensor:
    """Weighted bilinear sampling of a multi-level value map.

    Args:
        value: (B, S, M, Dh) per-head values of all levels, flattened level by level (row-major).
        spatial_shapes: L pairs (H_l, W_l) with sum(H_l * W_l) == S.
        sampling_locations: (B, Lq, M, L, P, 2) normalised (x, y) in [0, 1] of the padded maps.
        attention_weights: (B, Lq, M, L, P), softmax-normalised over (L, P).
    Returns:
        (B, Lq, M * Dh).
    """
    batch, _, num_heads, head_dim = value.shape
    _, num_queries, _, num_levels, num_points, _ = sampling_locations.shape
    value_per_level = value.split([h * w for h, w in spatial_shapes], dim=1)
    # level-major layouts so that every per-level slice below is contiguous (one copy each, not one per level)
    grids = (2 * sampling_locations - 1).permute(0, 2, 3, 1, 4, 5).reshape(
        batch * num_heads, num_levels, num_queries, num_points, 2
    )
    weights = attention_weights.permute(0, 2, 3, 1, 4).reshape(batch * num_heads, num_levels, num_queries, num_points)
    # without autograd the sampled values can be weighted in place (saves one (B*M, Dh, Lq, P) buffer per level)
    in_place = not (torch.is_grad_enabled() and (value.requires_grad or sampling_locations.requires_grad
                                                 or attention_weights.requires_grad))
    output = None
    for level, (height, width) in enumerate(spatial_shapes):
        # (B, H*W, M, Dh) -> (B*M, Dh, H, W)
        value_l = value_per_level[level].flatten(2).transpose(1, 2).reshape(batch * num_heads, head_dim, height, width)
        sampled = F.grid_sample(
            value_l, grids[:, level], mode="bilinear", padding_mode="zeros", align_corners=False
        )  # (B*M, Dh, Lq, P)
        level_weights = weights[:, level].unsqueeze(1)
        weighted = sampled.mul_(level_weights) if in_place else sampled * level_weights
        contribution = weighted.sum(-1)  # (B*M, Dh, Lq)
        if output is None:
            output = contribution
        else:
            output += contribution
    return output.view(batch, num_heads * head_dim, num_queries).transpose(1, 2)


class MSDeformAttn(nn.Module):
    """Multi-scale deformable attention module (official parameter names and initialisation).

    Args:
        d_model: channels of queries and values.
        n_levels: feature levels L.
        n_heads: attention heads M.
        n_points: sampling points P per head and level.
        sample_in_fp32: run the sampling in float32 even under autocast (bilinear weights and the
            softmax-weighted sum lose too much in half precision).
    """

    def __init__(self, d_model: int = 256, n_levels: int = 4, n_heads: int = 8, n_points: int = 4,
                 sample_in_fp32: bool = True):
        super().__init__()
        if d_model % n_heads != 0:
            raise ValueError(f"d_model ({d_model}) must be divisible by n_heads ({n_heads})")
        self.d_model = d_model
        self.n_levels = n_levels
        self.n_heads = n_heads
        self.n_points = n_points
        self.sample_in_fp32 = sample_in_fp32
        self.sampling_offsets = nn.Linear(d_model, n_heads * n_levels * n_points * 2)
        self.attention_weights = nn.Linear(d_model, n_heads * n_levels * n_points)
        self.value_proj = nn.Linear(d_model, d_model)
        self.output_proj = nn.Linear(d_model, d_model)
        self._reset_parameters()

    def _reset_parameters(self):
        nn.init.zeros_(self.sampling_offsets.weight)
        # initial offsets point along 8 directions, at distance 1..P, identical on every level
        thetas = torch.arange(self.n_heads, dtype=torch.float32) * (2.0 * math.pi / self.n_heads)
        directions = torch.stack([thetas.cos(), thetas.sin()], -1)
        directions = directions / directions.abs().max(-1, keepdim=True)[0]
        grid = directions.view(self.n_heads, 1, 1, 2).repeat(1, self.n_levels, self.n_points, 1)
        grid = grid * torch.arange(1, self.n_points + 1, dtype=torch.float32).view(1, 1, -1, 1)
        with torch.no_grad():
            self.sampling_offsets.bias.copy_(grid.flatten())
        nn.init.zeros_(self.attention_weights.weight)
        nn.init.zeros_(self.attention_weights.bias)
        nn.init.xavier_uniform_(self.value_proj.weight)
        nn.init.zeros_(self.value_proj.bias)
        nn.init.xavier_uniform_(self.output_proj.weight)
        nn.init.zeros_(self.output_proj.bias)

    def forward(self, query, reference_points, value_input, spatial_shapes, padding_mask=None):
        """
        Args:
            query: (B, Lq, C).
            reference_points: (B, Lq, L, 2) points (x, y) or (B, Lq, L, 4) boxes (cx, cy, w, h), normalised
                to the padded maps (broadcastable views are fine, nothing is copied).
            value_input: (B, S, C) flattened multi-level features.
            spatial_shapes: L pairs (H_l, W_l) as Python ints.
            padding_mask: (B, S) bool, True on padding (those values are zeroed).
        Returns:
            (B, Lq, C).
        """
        batch, num_queries, _ = query.shape
        value = self.value_proj(value_input)
        if padding_mask is not None:
            value = value.masked_fill(padding_mask[..., None], 0.0)
        value = value.view(batch, value.shape[1], self.n_heads, self.d_model // self.n_heads)
        offsets = self.sampling_offsets(query).view(
            batch, num_queries, self.n_heads, self.n_levels, self.n_points, 2
        )
        weights = self.attention_weights(query).view(batch, num_queries, self.n_heads, self.n_levels * self.n_points)
        weights = weights.softmax(-1).view(batch, num_queries, self.n_heads, self.n_levels, self.n_points)
        if self.sample_in_fp32:
            value, offsets, weights = value.float(), offsets.float(), weights.float()
            reference_points = reference_points.float()
        if reference_points.shape[-1] == 2:
            normalizer = torch.tensor(
                [[w, h] for h, w in spatial_shapes], dtype=offsets.dtype, device=offsets.device
            )
            locations = reference_points[:, :, None, :, None, :] + offsets / normalizer[None, None, None, :, None, :]
        elif reference_points.shape[-1] == 4:
            locations = (
                reference_points[:, :, None, :, None, :2]
                + offsets / self.n_points * reference_points[:, :, None, :, None, 2:] * 0.5
            )
        else:
            raise ValueError(f"reference_points must end in 2 or 4 coordinates, got {tuple(reference_points.shape)}")
        if self.sample_in_fp32 and torch.is_autocast_enabled(value.device.type):
            with torch.autocast(value.device.type, enabled=False):
                output = ms_deform_attn_sample(value, spatial_shapes, locations, weights)
        else:
            output = ms_deform_attn_sample(value, spatial_shapes, locations, weights)
        return self.output_proj(output.to(query.dtype))
