"""Multi-scale deformable attention (Deformable DETR), pure PyTorch.

The sampling is the official reference math: bilinear sampling with zeros padding and ``align_corners=False``
per level, weighted by per-head softmax attention. Instead of one ``grid_sample`` per level (which writes a
(B*M, Dh, Lq, P) sample buffer per level and gathers every channel from a different cache line), every
(query, head) output row is computed as one weighted bag of value rows: the 4 bilinear corners of every
(level, point) are turned into flat row indices of the (B*S*M, Dh) value matrix and their attention x bilinear
weights, and ``F.embedding_bag(mode="sum", per_sample_weights=...)`` sums them. The result has the
(B, Lq, M*Dh) output layout directly, and autograd gives the same gradients as ``grid_sample`` (the bilinear
weights are differentiable in the sampling locations; out-of-map corners get weight 0).
"""
import math
import warnings
from typing import List, NamedTuple, Tuple

import torch
import torch.nn.functional as F
from torch import nn


class _Corners(NamedTuple):
    """The 2x2 bilinear neighbourhood of every sampling point, (B, Lq, M, L, P) each."""

    x0: torch.Tensor  # int32 column of the left corners
    y0: torch.Tensor  # int32 row of the top corners
    fx: torch.Tensor  # fractional offset from x0 (differentiable in the locations when they require grad)
    fy: torch.Tensor
    inside_x0: torch.Tensor  # bool: the left column lies inside its map (outside corners read zeros)
    inside_x1: torch.Tensor
    inside_y0: torch.Tensor
    inside_y1: torch.Tensor
    widths: torch.Tensor  # (L, 1) int32, broadcast over the points
    heights: torch.Tensor


def _corners(spatial_shapes: List[Tuple[int, int]], sampling_locations: torch.Tensor) -> _Corners:
    device, dtype = sampling_locations.device, sampling_locations.dtype
    # per-level sizes as (L, 1) columns that broadcast over the points; int32 and float copies so that no
    # operation below promotes a (B, Lq, M, L, P) tensor to another dtype
    heights = torch.tensor([[h] for h, _ in spatial_shapes], device=device, dtype=torch.int32)
    widths = torch.tensor([[w] for _, w in spatial_shapes], device=device, dtype=torch.int32)
    x, y = sampling_locations.unbind(-1)
    # align_corners=False: pixel centres sit at (i + 0.5) / size
    x = x * widths.to(dtype) - 0.5
    y = y * heights.to(dtype) - 0.5
    x0, y0 = x.detach().floor(), y.detach().floor()
    fx, fy = x - x0, y - y0  # differentiable in the locations, exactly like grid_sample's bilinear weights
    x0, y0 = x0.int(), y0.int()
    return _Corners(x0, y0, fx, fy, (x0 >= 0) & (x0 < widths), (x0 >= -1) & (x0 < widths - 1),
                    (y0 >= 0) & (y0 < heights), (y0 >= -1) & (y0 < heights - 1), widths, heights)


def _corner_indices(corners: _Corners, spatial_shapes: List[Tuple[int, int]], num_tokens: int) -> torch.Tensor:
    """(B*Lq*M, L*P*4) int32 rows of the (B*S*M, Dh) value matrix, corners (x0, y0), (x1, y0), (x0, y1), (x1, y1)."""
    batch, num_queries, num_heads = corners.x0.shape[:3]
    if batch * num_tokens * num_heads >= 2**31:
        raise ValueError(f"{batch} x {num_tokens} x {num_heads} value rows do not fit int32 indices")
    device, widths, heights = corners.x0.device, corners.widths, corners.heights
    # a corner outside its map has weight 0; its index is clamped to any valid row
    zero = torch.zeros((), device=device, dtype=torch.int32)
    # row of (b, token, m) in the (B*S*M, Dh) view of the (B, S, M, Dh) values
    starts = torch.tensor([[0]] + [[h * w] for h, w in spatial_shapes[:-1]], device=device, dtype=torch.int32)
    image = torch.arange(batch, device=device, dtype=torch.int32).view(batch, 1, 1, 1, 1) * num_tokens
    head = torch.arange(num_heads, device=device, dtype=torch.int32).view(1, 1, num_heads, 1, 1)
    base = (image + starts.cumsum(0, dtype=torch.int32)) * num_heads + head  # (B, 1, M, L, 1)
    row_stride = widths * num_heads
    row_y0 = base + torch.clamp(corners.y0, zero, heights - 1) * row_stride
    row_y1 = base + torch.clamp(corners.y0 + 1, zero, heights - 1) * row_stride
    col_x0 = torch.clamp(corners.x0, zero, widths - 1) * num_heads
    col_x1 = torch.clamp(corners.x0 + 1, zero, widths - 1) * num_heads
    indices = torch.stack((row_y0 + col_x0, row_y0 + col_x1, row_y1 + col_x0, row_y1 + col_x1), -1)
    return indices.view(batch * num_queries * num_heads, -1)


def _axis_weights(corners: _Corners) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Bilinear factors (wx0, wx1, wy0, wy1) of the two columns and two rows, 0 for one outside its map."""
    return ((1 - corners.fx).masked_fill(~corners.inside_x0, 0), corners.fx.masked_fill(~corners.inside_x1, 0),
            (1 - corners.fy).masked_fill(~corners.inside_y0, 0), corners.fy.masked_fill(~corners.inside_y1, 0))


def _corner_weights(axis_weights, attention_weights: torch.Tensor) -> torch.Tensor:
    """(B*Lq*M, L*P*4) attention x bilinear weight of every corner, 0 for a corner outside its map."""
    wx0, wx1, wy0, wy1 = axis_weights
    wy0, wy1 = attention_weights * wy0, attention_weights * wy1
    weights = torch.stack((wy0 * wx0, wy0 * wx1, wy1 * wx0, wy1 * wx1), -1)
    return weights.flatten(-3).flatten(0, -2)  # (B, Lq, M, L, P, 4) -> (B*Lq*M, L*P*4)


def _bilinear_bags(spatial_shapes: List[Tuple[int, int]], num_tokens: int, sampling_locations: torch.Tensor,
                   attention_weights: torch.Tensor):
    """Flat value-row indices and weights of every bilinear corner.

    Args:
        spatial_shapes: L pairs (H_l, W_l); num_tokens: S.
        sampling_locations: (B, Lq, M, L, P, 2) normalised (x, y); attention_weights: (B, Lq, M, L, P).
    Returns:
        indices (B*Lq*M, L*P*4) int32 rows of the (B*S*M, Dh) value matrix, weights (B*Lq*M, L*P*4).
    """
    corners = _corners(spatial_shapes, sampling_locations)
    indices = _corner_indices(corners, spatial_shapes, num_tokens)
    return indices, _corner_weights(_axis_weights(corners), attention_weights)


def _geometry_grads(corners: _Corners, axis_weights, attention_weights: torch.Tensor, grad_weights: torch.Tensor):
    """Gradients of the locations (..., 2) and attention weights from those of the corner weights.

    The chain rule of ``_corner_weights`` written out: w = a * wy * wx with wx0 = (1 - fx) [inside],
    wx1 = fx [inside], wy likewise, and x = location_x * W - 0.5 (the floor carries no gradient).
    """
    g00, g01, g10, g11 = grad_weights.view(*corners.fx.shape, 4).unbind(-1)
    dtype = corners.fx.dtype
    in_x0, in_x1 = corners.inside_x0.to(dtype), corners.inside_x1.to(dtype)
    in_y0, in_y1 = corners.inside_y0.to(dtype), corners.inside_y1.to(dtype)
    wx0, wx1, vy0, vy1 = axis_weights
    top, bottom = g00 * wx0 + g01 * wx1, g10 * wx0 + g11 * wx1
    grad_attention = vy0 * top + vy1 * bottom
    grad_fx = attention_weights * (vy0 * (g01 * in_x1 - g00 * in_x0) + vy1 * (g11 * in_x1 - g10 * in_x0))
    grad_fy = attention_weights * (in_y1 * bottom - in_y0 * top)
    grad_locations = torch.stack((grad_fx * corners.widths.to(dtype), grad_fy * corners.heights.to(dtype)), -1)
    return grad_locations, grad_attention


def _sample(value: torch.Tensor, spatial_shapes: List[Tuple[int, int]], sampling_locations: torch.Tensor,
            attention_weights: torch.Tensor) -> torch.Tensor:
    batch, num_tokens, num_heads, head_dim = value.shape
    num_queries = sampling_locations.shape[1]
    indices, weights = _bilinear_bags(spatial_shapes, num_tokens, sampling_locations, attention_weights)
    rows = F.embedding_bag(indices, value.reshape(-1, head_dim), mode="sum", per_sample_weights=weights)
    return rows.view(batch, num_queries, num_heads * head_dim)


def _transposed_bag_sum(indices: torch.Tensor, weights: torch.Tensor, grad_rows: torch.Tensor,
                        num_value_rows: int) -> torch.Tensor:
    """d(output)/d(value): every value row sums the output-row gradients of the samples that read it.

    ``embedding_bag``'s own backward does this one sample at a time after a sort; regrouping the samples
    by value row (one argsort) turns it into the forward bag sum, which is several times faster on CPU.
    """
    samples_per_bag = indices.shape[1]
    flat = indices.reshape(-1)
    order = flat.argsort()
    offsets = torch.zeros(num_value_rows, dtype=torch.int64, device=flat.device)
    offsets[1:] = torch.bincount(flat, minlength=num_value_rows).cumsum(0)[:-1]
    reading_bags = torch.div(order, samples_per_bag, rounding_mode="floor")
    return F.embedding_bag(reading_bags, grad_rows, offsets, mode="sum",
                           per_sample_weights=weights.reshape(-1)[order])


def _sample_weight_grads(indices: torch.Tensor, grad_rows: torch.Tensor, value_rows: torch.Tensor) -> torch.Tensor:
    """d(output)/d(sample weight) = <grad of the sample's output row, value row it reads>, as (bags, samples).

    A sampled dense-dense product: CSR sparsity (bag, value row), computed without gathering the rows.
    """
    num_bags, samples_per_bag = indices.shape
    crow = torch.arange(0, num_bags * samples_per_bag + 1, samples_per_bag, device=indices.device)
    with warnings.catch_warnings():  # "sparse CSR support is in beta": the two calls used here are tested
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
        pattern = torch.sparse_csr_tensor(
            crow, indices.reshape(-1).long(),
            torch.zeros(indices.numel(), dtype=grad_rows.dtype, device=indices.device),
            size=(num_bags, value_rows.shape[0]), check_invariants=False,  # valid by construction
        )
    return torch.sparse.sampled_addmm(pattern, grad_rows, value_rows.t(), beta=0.0).values().view(indices.shape)


class _RecomputedBagSample(torch.autograd.Function):
    """``_sample`` that stores only its inputs and has a hand-written backward.

    Backward rebuilds the corner bags, computes the value gradient as a transposed bag sum, the corner
    weight gradients as a sampled product and from them, in closed form, the location and attention
    gradients. The math is ``_sample``'s under autograd; tests compare the two in float64 and gradcheck it.
    """

    @staticmethod
    def forward(ctx, value, sampling_locations, attention_weights, spatial_shapes):
        ctx.spatial_shapes = spatial_shapes
        ctx.save_for_backward(value, sampling_locations, attention_weights)
        return _sample(value, spatial_shapes, sampling_locations, attention_weights)

    @staticmethod
    def backward(ctx, grad_output):
        value, sampling_locations, attention_weights = ctx.saved_tensors
        need_value, need_locations, need_attention = ctx.needs_input_grad[:3]
        num_tokens, head_dim = value.shape[1], value.shape[3]
        grad_rows = grad_output.reshape(-1, head_dim).contiguous()
        value_rows = value.reshape(-1, head_dim)
        corners = _corners(ctx.spatial_shapes, sampling_locations)
        axis_weights = _axis_weights(corners)
        indices = _corner_indices(corners, ctx.spatial_shapes, num_tokens)
        grad_value = grad_locations = grad_attention = None
        if need_value:
            weights = _corner_weights(axis_weights, attention_weights)
            grad_value = _transposed_bag_sum(indices, weights, grad_rows, value_rows.shape[0]).view_as(value)
            del weights
        if need_locations or need_attention:
            grad_weights = _sample_weight_grads(indices, grad_rows, value_rows)
            del indices
            grad_locations, grad_attention = _geometry_grads(corners, axis_weights, attention_weights, grad_weights)
        return (grad_value, grad_locations if need_locations else None,
                grad_attention if need_attention else None, None)


def ms_deform_attn_sample(
    value: torch.Tensor,
    spatial_shapes: List[Tuple[int, int]],
    sampling_locations: torch.Tensor,
    attention_weights: torch.Tensor,
    recompute_in_backward: bool = False,
) -> torch.Tensor:
    """Weighted bilinear sampling of a multi-level value map.

    Args:
        value: (B, S, M, Dh) per-head values of all levels, flattened level by level (row-major).
        spatial_shapes: L pairs (H_l, W_l) with sum(H_l * W_l) == S.
        sampling_locations: (B, Lq, M, L, P, 2) normalised (x, y) in [0, 1] of the padded maps.
        attention_weights: (B, Lq, M, L, P), softmax-normalised over (L, P).
        recompute_in_backward: with autograd, keep only the inputs and rebuild the (B*Lq*M, L*P*4) corner
            indices and weights in backward (hand-written backward) instead of letting autograd store them
            and their intermediates. Float32/float64 only; other dtypes take the autograd path.
    Returns:
        (B, Lq, M * Dh).
    """
    if sum(h * w for h, w in spatial_shapes) != value.shape[1]:
        raise ValueError(f"spatial_shapes {spatial_shapes} do not cover the {value.shape[1]} value tokens")
    tracking = torch.is_grad_enabled() and (
        value.requires_grad or sampling_locations.requires_grad or attention_weights.requires_grad
    )
    if tracking and recompute_in_backward and value.dtype in (torch.float32, torch.float64):
        return _RecomputedBagSample.apply(value, sampling_locations, attention_weights, spatial_shapes)
    return _sample(value, spatial_shapes, sampling_locations, attention_weights)


class MSDeformAttn(nn.Module):
    """Multi-scale deformable attention module (official parameter names and initialisation).

    Args:
        d_model: channels of queries and values.
        n_levels: feature levels L.
        n_heads: attention heads M.
        n_points: sampling points P per head and level.
        sample_in_fp32: run the sampling in float32 even under autocast (bilinear weights and the
            softmax-weighted sum lose too much in half precision).
        recompute_sampling: in training, sample again in backward rather than storing every level's samples.
    """

    def __init__(self, d_model: int = 256, n_levels: int = 4, n_heads: int = 8, n_points: int = 4,
                 sample_in_fp32: bool = True, recompute_sampling: bool = False):
        super().__init__()
        if d_model % n_heads != 0:
            raise ValueError(f"d_model ({d_model}) must be divisible by n_heads ({n_heads})")
        self.d_model = d_model
        self.n_levels = n_levels
        self.n_heads = n_heads
        self.n_points = n_points
        self.sample_in_fp32 = sample_in_fp32
        self.recompute_sampling = recompute_sampling
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
                output = ms_deform_attn_sample(value, spatial_shapes, locations, weights, self.recompute_sampling)
        else:
            output = ms_deform_attn_sample(value, spatial_shapes, locations, weights, self.recompute_sampling)
        return self.output_proj(output.to(query.dtype))
