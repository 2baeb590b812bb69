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

    # (..., L, E) -> (N, M, L, E/M) with all leading dimensions in N: the fused (flash) SDPA kernels take
    # 4-D inputs only; with more dimensions SDPA falls back to the math path, which stores the (L, S)
    # probabilities and their intermediates for backward (at 300 instances x 26 slots: 1 GiB over the 6 decoder layers)
    leading = q.shape[:-2]

    def split_heads(t):
        t = t.unflatten(-1, (num_heads, embed_dim // num_heads)).transpose(-3, -2)
        return t.reshape(-1, *t.shape[-3:])

    if attn_mask is not None and attn_mask.dtype == torch.bool:
        attn_mask = ~attn_mask  # SDPA: True = may attend
    dropout = module.dropout if module.training else 0.0
    out = F.scaled_dot_product_attention(split_heads(q), split_heads(k), split_heads(v), attn_mask=attn_mask,
                                         dropout_p=dropout)
    return module.out_proj(out.transpose(-3, -2).reshape(*leading, -1, embed_dim))


class _HiddenRecomputedFFN(torch.autograd.Function):
    """``linear2(relu(linear1(x)))`` that keeps x, not the d_ffn-wide hidden activations, for backward.

    The hidden ReLU output is the largest tensor a transformer layer saves (2048 wide, 8x the model width);
    backward recomputes it with one matmul (not the whole layer, as activation checkpointing would) and applies
    the chain rule of both linears and the ReLU by hand, in place where it can (every d_ffn-wide temporary is
    a large allocation). The autocast state of the forward is restored for the recomputation, so mixed
    precision sees the same values.
    """

    @staticmethod
    def forward(ctx, x, weight1, bias1, weight2, bias2):
        device_type = x.device.type
        ctx.autocast = (device_type, torch.is_autocast_enabled(device_type), torch.get_autocast_dtype(device_type))
        ctx.save_for_backward(x, weight1, bias1, weight2)
        return F.linear(F.relu(F.linear(x, weight1, bias1), inplace=True), weight2, bias2)

    @staticmethod
    def backward(ctx, grad_out):
        x, weight1, bias1, weight2 = ctx.saved_tensors
        device_type, autocast_enabled, autocast_dtype = ctx.autocast
        with torch.autocast(device_type, dtype=autocast_dtype, enabled=autocast_enabled):
            hidden = F.relu(F.linear(x, weight1, bias1), inplace=True)
        dtype = hidden.dtype
        grad_out = grad_out.to(dtype).flatten(0, -2)
        hidden_rows = hidden.flatten(0, -2)
        grad_weight2 = (grad_out.t() @ hidden_rows).to(weight2.dtype) if ctx.needs_input_grad[3] else None
        grad_bias2 = grad_out.sum(0).to(weight2.dtype) if ctx.needs_input_grad[4] else None
        grad_hidden = (grad_out @ weight2.to(dtype)).masked_fill_(hidden_rows == 0, 0)  # ReLU: no gradient at <= 0
        del hidden, hidden_rows
        x_rows = x.flatten(0, -2)
        grad_x = (grad_hidden @ weight1.to(dtype)).view(x.shape).to(x.dtype) if ctx.needs_input_grad[0] else None
        grad_weight1 = (grad_hidden.t() @ x_rows.to(dtype)).to(weight1.dtype) if ctx.needs_input_grad[1] else None
        grad_bias1 = grad_hidden.sum(0).to(bias1.dtype) if ctx.needs_input_grad[2] else None
        return grad_x, grad_weight1, grad_bias1, grad_weight2, grad_bias2


def feed_forward(x: torch.Tensor, linear1: nn.Linear, dropout: nn.Dropout, linear2: nn.Linear,
                 recompute_hidden: bool = False) -> torch.Tensor:
    """The transformer FFN ``linear2(dropout(relu(linear1(x))))``.

    Args:
        recompute_hidden: in training, store x instead of the hidden activations and recompute them in
            backward (``MODEL.ESTS.FFN_RECOMPUTE``); needs dropout 0, like every official ESTS config.
    """
    if recompute_hidden and torch.is_grad_enabled():
        if dropout.p > 0 and dropout.training:
            raise ValueError("MODEL.ESTS.FFN_RECOMPUTE needs MODEL.ESTS.DROPOUT 0: the dropout mask would be redrawn")
        return _HiddenRecomputedFFN.apply(x, linear1.weight, linear1.bias, linear2.weight, linear2.bias)
    # ReLU in place (linear1's backward does not need its output, and the d_ffn-wide result is a large
    # allocation) on 2-D rows: on a view of N-D linear output, autograd would clone the gradient (CopySlices)
    rows = x.reshape(-1, x.shape[-1])
    return linear2(dropout(F.relu(linear1(rows), inplace=True))).view(*x.shape[:-1], -1)
