"""Multi-scale deformable attention (Deformable DETR): the layer; the sampling op is ``ops.ms_deform_attn_sample``.

``forward`` reads as the math: project the values, project the queries to sampling points and attention
weights, sample, project the output. What autograd keeps of it is decided in one place, ``_kept_as_recipes``
(see ``recompute.py`` for every memory saving and its switch).
"""
import contextlib
import math
from functools import partial
from typing import NamedTuple, Optional

import torch
from torch import nn

from .ops import ms_deform_attn_sample, over_points, points_of_queries
from .recompute import MemoryPolicy, Recipe, matmul_rows, output_saved_as_recipe, saved_as_recipes, then


class MSDeformAttn(nn.Module):
    """Multi-scale deformable attention module (official parameter names and initialisation).

    Args:
        d_model: channels of queries and values.
        n_levels: feature levels L.
        n_heads: attention heads M.
        n_points: sampling points P per head and level.
        sample_in_fp32: run the sampling in float32 even under autocast (bilinear weights and the
            softmax-weighted sum lose too much in half precision).
        policy: what backward recomputes instead of autograd keeping it (``recompute.MemoryPolicy``).
    """

    def __init__(self, d_model: int = 256, n_levels: int = 4, n_heads: int = 8, n_points: int = 4,
                 sample_in_fp32: bool = True, policy: MemoryPolicy = MemoryPolicy()):
        super().__init__()
        if d_model % n_heads != 0:
            raise ValueError(f"d_model ({d_model}) must be divisible by n_heads ({n_heads})")
        self.d_model = d_model
        self.n_levels = n_levels
        self.n_heads = n_heads
        self.n_points = n_points
        self.sample_in_fp32 = sample_in_fp32
        self.policy = policy
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

    def _sampling_locations(self, query_rows, reference_points, spatial_shapes):
        """(B, Lq, M, L, P, 2) normalised sampling points: reference points moved by the projected offsets.

        Args:
            query_rows: (B * Lq, C); reference_points: (B, Lq, L, 2 or 4).
        """
        batch, num_queries = reference_points.shape[:2]
        offsets = self.sampling_offsets(query_rows).view(batch, num_queries, self.n_heads, self.n_levels,
                                                    self.n_points, 2)
        if self.sample_in_fp32:  # the locations are the sampling's input: float32 from the start
            offsets, reference_points = offsets.float(), reference_points.float()
        # reference points and normalizer laid out over the points (see over_points): the same arithmetic,
        # in the official order, without short broadcast inner loops
        if reference_points.shape[-1] == 2:
            normalizer = over_points(torch.tensor(
                [[w, h] for h, w in spatial_shapes], dtype=offsets.dtype, device=offsets.device), self.n_points)
            return points_of_queries(reference_points, self.n_points) + offsets / normalizer
        if reference_points.shape[-1] == 4:
            centres = points_of_queries(reference_points[..., :2], self.n_points)
            sizes = points_of_queries(reference_points[..., 2:], self.n_points)
            return centres + offsets / self.n_points * sizes * 0.5
        raise ValueError(f"reference_points must end in 2 or 4 coordinates, got {tuple(reference_points.shape)}")

    def forward(self, query, reference_points, value_input, spatial_shapes, padding_mask=None,
                query_recipe: Optional[Recipe] = None, value_input_recipe: Optional[Recipe] = None):
        """
        Args:
            query: (B, Lq, C).
            reference_points: (B, Lq, L, 2) points (x, y) or (B, Lq, L, 4) boxes (cx, cy, w, h), normalised
                to the padded maps (broadcastable views are fine, nothing is copied).
            value_input: (B, S, C) flattened multi-level features.
            spatial_shapes: L pairs (H_l, W_l) as Python ints.
            padding_mask: (B, S) bool, True on padding (those values are zeroed).
            query_recipe, value_input_recipe: recipes of the query and of the value map when they are made of
                tensors kept anyway: then nothing keeps them (nor their autocast copies).
        Returns:
            (B, Lq, C).
        """
        batch = query.shape[0]
        # 2-D rows, cast once: their projections keep these very tensors, which recipes can name
        value_rows, query_rows = matmul_rows(value_input), matmul_rows(query)
        recipes = self._recipes(value_rows, query_rows, value_input_recipe, query_recipe, reference_points,
                                spatial_shapes, padding_mask)
        with saved_as_recipes((value_rows, recipes.value_rows), (query_rows, recipes.query_rows)):
            value = self._values(value_rows, padding_mask, batch)
            logits = self._logits(query_rows, batch)
            locations = self._sampling_locations(query_rows, reference_points, spatial_shapes)
        with output_saved_as_recipe(logits.shape, logits.device.type, recipes.probabilities):
            weights = self._weights(logits.softmax(-1))
        # value and weights go to the sampling in their own dtype: it upcasts them itself (and keeps the
        # smaller originals for backward); the hooks first, so that recipes run under the forward's autocast
        with saved_as_recipes((value, recipes.value), (locations, recipes.locations), (weights, recipes.weights)), \
                self._sampling_precision(value.device.type):
            output = ms_deform_attn_sample(value, spatial_shapes, locations, weights, self.policy.recompute_sampling,
                                           torch.float32 if self.sample_in_fp32 else None)
        return self.output_proj(output.to(query.dtype))

    def _values(self, value_rows, padding_mask, batch: int):
        """(B * S, C) rows -> (B, S, M, Dh) per-head values, zero on padding."""
        # on 2-D rows the projection is a fresh tensor (not a view), so the padding is zeroed in place
        value = self.value_proj(value_rows)
        if padding_mask is not None:
            value = value.masked_fill_(padding_mask.reshape(-1, 1), 0.0)
        return value.view(batch, -1, self.n_heads, self.d_model // self.n_heads)

    def _logits(self, query_rows, batch: int):
        """(B * Lq, C) rows -> (B, Lq, M, L * P) attention logits."""
        return self.attention_weights(query_rows).view(batch, -1, self.n_heads, self.n_levels * self.n_points)

    def _weights(self, probabilities):
        """(B, Lq, M, L * P) softmax output -> (B, Lq, M, L, P) attention weights (a view)."""
        return probabilities.view(*probabilities.shape[:3], self.n_levels, self.n_points)

    def _sampling_precision(self, device_type: str):
        return torch.autocast(device_type, enabled=False) if self.sample_in_fp32 else contextlib.nullcontext()

    def _recipes(self, value_rows, query_rows, value_input_recipe, query_recipe, reference_points, spatial_shapes,
                 padding_mask) -> "_AttentionRecipes":
        """The one place that decides what autograd keeps of this layer (None: the tensor itself).

        The rows have recipes when their inputs do. With ``recompute_sampling`` the sampling keeps only values,
        locations and weights, and the softmax its output: each one matmul from rows kept anyway, so they are
        kept as recipes too (a (B, S, C), a (B, Lq, M, L, P, 2) and a (B, Lq, M, L * P) tensor less per layer).
        """
        if not self.policy.recipes:
            return _AttentionRecipes()
        value_rows_recipe, query_rows_recipe = then(value_input_recipe, matmul_rows), then(query_recipe, matmul_rows)
        if not self.policy.recompute_sampling:
            return _AttentionRecipes(value_rows_recipe, query_rows_recipe)
        # recipes of rows that have their own do not read the rows: that would keep them alive after all
        value_rows_source = value_rows_recipe or Recipe(partial(_identity, value_rows))
        query_rows_source = query_rows_recipe or Recipe(partial(_identity, query_rows))
        batch = reference_points.shape[0]
        probabilities = query_rows_source.then(self._logits, batch).then(torch.Tensor.softmax, -1)
        return _AttentionRecipes(value_rows_recipe, query_rows_recipe,
                                 value=value_rows_source.then(self._values, padding_mask, batch),
                                 locations=query_rows_source.then(self._sampling_locations, reference_points,
                                                                 spatial_shapes),
                                 probabilities=probabilities, weights=probabilities.then(self._weights))


def _identity(tensor: torch.Tensor) -> torch.Tensor:
    return tensor


class _AttentionRecipes(NamedTuple):
    """Recipes of the tensors ``MSDeformAttn.forward`` hands to ops that keep them (None: kept as they are)."""

    value_rows: Optional[Recipe] = None
    query_rows: Optional[Recipe] = None
    value: Optional[Recipe] = None
    locations: Optional[Recipe] = None
    probabilities: Optional[Recipe] = None
    weights: Optional[Recipe] = None
