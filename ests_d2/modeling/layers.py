"""Small building blocks shared by the ESTS transformer and heads."""
from functools import partial

import torch
import torch.nn.functional as F
from torch import nn

from .recompute import MemoryPolicy, Recipe, autocast_matmul_input, saved_as_recipes


class MLP(nn.Module):
    """``num_layers`` Linear layers with ReLU between them (official ``MLP``; parameter names ``layers.i``)."""

    def __init__(self, input_dim: int, hidden_dim: int, output_dim: int, num_layers: int):
        super().__init__()
        dims_in = [input_dim] + [hidden_dim] * (num_layers - 1)
        dims_out = [hidden_dim] * (num_layers - 1) + [output_dim]
        self.layers = nn.ModuleList(nn.Linear(i, o) for i, o in zip(dims_in, dims_out))

    def forward(self, x):
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < len(self.layers) - 1:
                x = F.relu(x)
        return x


def gather_rows(tensor: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``tensor[b, index[b, k]]`` for (B, K) indices into dimension 1 (any trailing dimensions).

    Indexing, not ``torch.gather``: gather keeps its whole input for backward, indexing only its size.
    """
    rows = torch.arange(index.shape[0], device=index.device)[:, None]
    return tensor[rows, index]


def inverse_sigmoid(x: torch.Tensor, eps: float = 1e-3) -> torch.Tensor:
    """Logit of x clamped to [0, 1], both sides clamped to ``eps`` (official eps 1e-3)."""
    x = x.clamp(min=0, max=1)
    return torch.log(x.clamp(min=eps) / (1 - x).clamp(min=eps))


def box_cxcywh_to_xyxy(boxes: torch.Tensor) -> torch.Tensor:
    cx, cy, w, h = boxes.unbind(-1)
    return torch.stack((cx - 0.5 * w, cy - 0.5 * h, cx + 0.5 * w, cy + 0.5 * h), dim=-1)


def multihead_attention(module: nn.MultiheadAttention, query, key, value, attn_mask=None, same_qk: bool = False,
                        policy: MemoryPolicy = MemoryPolicy()):
    """Batch-first multi-head attention with the parameters of an ``nn.MultiheadAttention``.

    Uses ``F.scaled_dot_product_attention`` so any number of leading batch dimensions is one call.

    Args:
        module: the parameter holder (``in_proj_weight``/``in_proj_bias``/``out_proj``).
        query, key, value: (..., L, E) / (..., S, E) / (..., S, E).
        attn_mask: None, a float additive mask (L, S), or a bool mask (L, S) with True = *blocked*
            (``nn.MultiheadAttention`` convention).
        same_qk: query and key are the same tensor; project them with one matmul.
        policy: with ``policy.recipes``, autograd keeps recipes of the per-head q, k, v (one matmul from inputs
            the projections keep anyway) and of the merged heads (a reshape of the attention output, which the
            attention keeps anyway) instead of the four tensors.
    Returns:
        (..., L, E).
    """
    embed_dim = module.embed_dim
    query_in, q_recipe, k_recipe, v_recipe = _head_recipes(module, query, key, value, same_qk)
    if same_qk:  # one matmul for both
        q, k = (_split_heads(t, module.num_heads) for t in _in_projection(module, query_in, 0, 2).chunk(2, dim=-1))
    else:
        q, k = q_recipe(), k_recipe()
    v = v_recipe()
    if attn_mask is not None and attn_mask.dtype == torch.bool:
        attn_mask = ~attn_mask  # SDPA: True = may attend
    dropout = module.dropout if module.training else 0.0
    with saved_as_recipes(*((t, recipe if policy.recipes else None)
                            for t, recipe in ((q, q_recipe), (k, k_recipe), (v, v_recipe)))):
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, dropout_p=dropout)
    # as 2-D rows: out_proj then keeps this very tensor (of an N-D input it keeps a 2-D view)
    merged_recipe = Recipe(partial(_merged_heads, out, embed_dim))
    merged = merged_recipe()
    with saved_as_recipes((merged, merged_recipe if policy.recipes else None)):
        return module.out_proj(merged).view(*query.shape[:-2], -1, embed_dim)


def _head_recipes(module, query, key, value, same_qk: bool):
    """The query cast once, and the recipes of the per-head q, k, v.

    Each input is cast once (under autocast): the projections keep these very tensors, the recipes read them.
    """
    query_in = autocast_matmul_input(query)
    key_in = query_in if key is query else autocast_matmul_input(key)
    value_in = query_in if value is query else key_in if value is key else autocast_matmul_input(value)
    if same_qk:  # q and k: halves of one matmul, as in forward
        q_recipe, k_recipe = (Recipe(partial(_half_of_pair, module, query_in, part)) for part in (0, 1))
    else:
        q_recipe, k_recipe = Recipe(partial(_heads, module, query_in, 0)), Recipe(partial(_heads, module, key_in, 1))
    return query_in, q_recipe, k_recipe, Recipe(partial(_heads, module, value_in, 2))


def _in_projection(module, x, first: int, last: int):
    embed_dim = module.embed_dim
    rows = slice(first * embed_dim, last * embed_dim)
    return F.linear(x, module.in_proj_weight[rows], module.in_proj_bias[rows])


def _split_heads(t, num_heads: int):
    """(..., L, E) -> (N, M, L, E/M) with all leading dimensions in N: the fused (flash) SDPA kernels take 4-D
    inputs only; with more dimensions SDPA falls back to the math path, which stores the (L, S) probabilities
    and their intermediates for backward (at 300 instances x 26 slots: 1 GiB over the 6 decoder layers)."""
    t = t.unflatten(-1, (num_heads, t.shape[-1] // num_heads)).transpose(-3, -2)
    return t.reshape(-1, *t.shape[-3:])


def _heads(module, x, part: int):
    return _split_heads(_in_projection(module, x, part, part + 1), module.num_heads)


def _half_of_pair(module, x, part: int):
    return _split_heads(_in_projection(module, x, 0, 2).chunk(2, dim=-1)[part], module.num_heads)


def _merged_heads(out, embed_dim: int):
    return out.transpose(-3, -2).reshape(-1, embed_dim)
