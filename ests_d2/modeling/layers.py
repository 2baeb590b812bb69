"""Small building blocks shared by the ESTS transformer and heads."""
import torch
import torch.nn.functional as F
from torch import nn


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


def inverse_sigmoid(x: torch.Tensor, eps: float = 1e-3) -> torch.Tensor:
    """Logit of x clamped to [0, 1], both sides clamped to ``eps`` (official eps 1e-3)."""
    x = x.clamp(min=0, max=1)
    return torch.log(x.clamp(min=eps) / (1 - x).clamp(min=eps))


def box_cxcywh_to_xyxy(boxes: torch.Tensor) -> torch.Tensor:
    cx, cy, w, h = boxes.unbind(-1)
    return torch.stack((cx - 0.5 * w, cy - 0.5 * h, cx + 0.5 * w, cy + 0.5 * h), dim=-1)


def multihead_attention(module: nn.MultiheadAttention, query, key, value, attn_mask=None, same_qk: bool = False):
    """Batch-first multi-head attention with the parameters of an ``nn.MultiheadAttention``.

    Uses ``F.scaled_dot_product_attention`` so any number of leading batch dimensions is one call.

    Args:
        module: the parameter holder (``in_proj_weight``/``in_proj_bias``/``out_proj``).
        query, key, value: (..., L, E) / (..., S, E) / (..., S, E).
        attn_mask: None, a float additive mask (L, S), or a bool mask (L, S) with True = *blocked*
            (``nn.MultiheadAttention`` convention).
        same_qk: query and key are the same tensor; project them with one matmul.
    Returns:
        (..., L, E).
    """
    embed_dim = module.embed_dim
    num_heads = module.num_heads
    weight, bias = module.in_proj_weight, module.in_proj_bias
    if same_qk:
        q, k = F.linear(query, weight[: 2 * embed_dim], bias[: 2 * embed_dim]).chunk(2, dim=-1)
    else:
        q = F.linear(query, weight[:embed_dim], bias[:embed_dim])
        k = F.linear(key, weight[embed_dim : 2 * embed_dim], bias[embed_dim : 2 * embed_dim])
    v = F.linear(value, weight[2 * embed_dim :], bias[2 * embed_dim :])

    def split_heads(t):  # (..., L, E) -> (..., M, L, E/M)
        return t.unflatten(-1, (num_heads, embed_dim // num_heads)).transpose(-3, -2)

    if attn_mask is not None and attn_mask.dtype == torch.bool:
        attn_mask = ~attn_mask  # SDPA: True = may attend
    dropout = module.dropout if module.training else 0.0
    out = F.scaled_dot_product_attention(split_heads(q), split_heads(k), split_heads(v), attn_mask=attn_mask,
                                         dropout_p=dropout)
    return module.out_proj(out.transpose(-3, -2).flatten(-2))
