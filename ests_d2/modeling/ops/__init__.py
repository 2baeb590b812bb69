"""Operators behind the layers: the deformable-attention sampling (a seam for a compiled kernel)."""
from .ms_deform_sampling import ms_deform_attn_sample, over_points, points_of_queries

__all__ = ["ms_deform_attn_sample", "over_points", "points_of_queries"]
