"""Small building blocks shared by the ESTS transformer and heads."""
import contextlib
import operator
import weakref
from functools import partial
from typing import Callable, Optional, Tuple

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


class _RowMean(torch.autograd.Function):
    """``avg_pool2d`` over all rows of (N, C, H, W), bit for bit, without keeping the input for backward.

    ``avg_pool2d``'s backward is handed its input only for the shape; for the (instances, D, 8, 25) RoI
    features that is the largest tensor of the recognition branch. Its gradient is grad / H on every row,
    which is what this backward returns (as a broadcast view, no copy).
    """

    @staticmethod
    def forward(ctx, x):
        ctx.rows = x.shape[2]
        return F.avg_pool2d(x, (x.shape[2], 1), stride=1)

    @staticmethod
    def backward(ctx, grad):
        return (grad / ctx.rows).expand(-1, -1, ctx.rows, -1)


def row_mean(x: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) -> (N, C, 1, W): the mean over the H rows, computed as the official ``avg_pool2d``."""
    return _RowMean.apply(x)


def multihead_attention(module: nn.MultiheadAttention, query, key, value, attn_mask=None, same_qk: bool = False,
                        rebuild_projections: bool = False):
    """Batch-first multi-head attention with the parameters of an ``nn.MultiheadAttention``.

    Uses ``F.scaled_dot_product_attention`` so any number of leading batch dimensions is one call.

    Args:
        module: the parameter holder (``in_proj_weight``/``in_proj_bias``/``out_proj``).
        query, key, value: (..., L, E) / (..., S, E) / (..., S, E).
        attn_mask: None, a float additive mask (L, S), or a bool mask (L, S) with True = *blocked*
            (``nn.MultiheadAttention`` convention).
        same_qk: query and key are the same tensor; project them with one matmul.
        rebuild_projections: when autograd records, keep how to redo the per-head q, k, v (one matmul from
            inputs the projections keep anyway) and the merged heads (a reshape of the attention output,
            which the attention keeps anyway) instead of the four tensors. Off inside activation-checkpointed
            code: saved-tensor hooks do not nest.
    Returns:
        (..., L, E).
    """
    embed_dim = module.embed_dim
    num_heads = module.num_heads
    weight, bias = module.in_proj_weight, module.in_proj_bias
    # each input cast once (under autocast): the projections keep these very tensors, the rebuilds read them
    query_in = autocast_matmul_input(query)
    key_in = query_in if key is query else autocast_matmul_input(key)
    value_in = query_in if value is query else key_in if value is key else autocast_matmul_input(value)

    def project(x, first, last):
        return F.linear(x, weight[first * embed_dim : last * embed_dim], bias[first * embed_dim : last * embed_dim])

    # (..., L, E) -> (N, M, L, E/M) with all leading dimensions in N: the fused (flash) SDPA kernels take
    # 4-D inputs only; with more dimensions SDPA falls back to the math path, which stores the (L, S)
    # probabilities and their intermediates for backward (at 300 instances x 26 slots: 1 GiB over the 6 decoder layers)
    leading = query.shape[:-2]

    def split_heads(t):
        t = t.unflatten(-1, (num_heads, embed_dim // num_heads)).transpose(-3, -2)
        return t.reshape(-1, *t.shape[-3:])

    def query_heads():
        return split_heads(project(query_in, 0, 2).chunk(2, dim=-1)[0] if same_qk else project(query_in, 0, 1))

    def key_heads():
        return split_heads(project(query_in, 0, 2).chunk(2, dim=-1)[1] if same_qk else project(key_in, 1, 2))

    def value_heads():
        return split_heads(project(value_in, 2, 3))

    if same_qk:  # one matmul for both
        q, k = (split_heads(t) for t in project(query_in, 0, 2).chunk(2, dim=-1))
    else:
        q, k = query_heads(), key_heads()
    v = value_heads()
    if attn_mask is not None and attn_mask.dtype == torch.bool:
        attn_mask = ~attn_mask  # SDPA: True = may attend
    dropout = module.dropout if module.training else 0.0
    rebuild = rebuild_projections and torch.is_grad_enabled()
    with (recomputed_when_saved((q, query_heads), (k, key_heads), (v, value_heads)) if rebuild
          else contextlib.nullcontext()):
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, dropout_p=dropout)

    def merge_heads():  # as 2-D rows: out_proj then keeps this very tensor (N-D input, it keeps a 2-D view)
        return out.transpose(-3, -2).reshape(-1, embed_dim)

    merged = merge_heads()
    with recomputed_when_saved((merged, merge_heads)) if rebuild else contextlib.nullcontext():
        return module.out_proj(merged).view(*leading, -1, embed_dim)


def autocast_matmul_input(x: torch.Tensor) -> torch.Tensor:
    """``x`` as autocast would cast it for a matmul; ``x`` itself when autocast is off.

    Autocast casts a float32 activation again for every linear that reads it, and each linear keeps its own
    copy for backward. Casting once beforehand gives the linears the same values and one shared copy.
    """
    device_type = x.device.type
    if torch.is_autocast_enabled(device_type) and x.is_floating_point() and x.dtype != torch.float64:
        return x.to(torch.get_autocast_dtype(device_type))
    return x


class _SharedCast(torch.autograd.Function):
    """``cast`` (x already cast, made without autograd) as a view, with autograd's edge to x: backward converts
    the gradient to x's dtype, as the ``ToCopyBackward`` of autocast's own cast would."""

    @staticmethod
    def forward(ctx, x, cast):
        ctx.dtype = x.dtype
        return cast.view_as(cast)

    @staticmethod
    def backward(ctx, grad):
        return grad.to(ctx.dtype), None


def shared_autocast_input(x: torch.Tensor) -> Callable[[], torch.Tensor]:
    """For a tensor that several matmuls read: a function that gives ``x`` as autocast casts it (see
    ``autocast_matmul_input``), every call a view of one copy made now.

    Autocast would cast x for every reader, and each reader would keep its own copy. Sharing one cast as one
    tensor would add the readers' gradients up in half precision; here every call is its own autograd node, so
    they are converted back one by one and add up in x's dtype, as with autocast's own casts.
    """
    with torch.no_grad():
        cast = autocast_matmul_input(x)
    if cast is x:
        return lambda: x
    return partial(_SharedCast.apply, x, cast)


def applied_to_rebuilt(function: Callable[..., torch.Tensor], rebuild: Callable[[], torch.Tensor], *args
                       ) -> torch.Tensor:
    """``function(rebuild(), *args)``: a recipe for a tensor made from one that is itself rebuilt (a sum, a norm,
    a transpose...; bind it with ``partial``)."""
    return function(rebuild(), *args)


def residual_norm(norm: nn.LayerNorm, x: torch.Tensor, update: torch.Tensor,
                  rebuild_x: Optional[Callable[[], torch.Tensor]], allow_rebuild: bool = True):
    """``norm(x + update)`` of a post-norm residual block, and a function that redoes it bit for bit.

    Under autocast the update comes from a matmul in half precision while the stream x, and so the sum, is
    float32 (the decoder's stream always; the encoder's on CUDA, whose autocast runs the norms in float32),
    and the norm keeps that float32 sum for backward. When x can be rebuilt (``rebuild_x``: typically the
    previous norm's output, redone from what that norm keeps), the update is kept instead, at half the size,
    and backward rebuilds the sum. Chains of rebuilds end at a norm called with ``rebuild_x=None``, whose
    input is kept. In float32 the update is as large as the sum and nothing is rebuilt; nor with
    ``allow_rebuild`` False (inside activation-checkpointed code: saved-tensor hooks do not nest).
    """
    residual = x + update
    rebuild = (allow_rebuild and rebuild_x is not None and torch.is_grad_enabled()
               and update.element_size() < residual.element_size())
    if not rebuild:
        return norm(residual), partial(norm, residual)
    rebuild_residual = partial(applied_to_rebuilt, operator.add, rebuild_x, update)
    with recomputed_when_saved((residual, rebuild_residual)):
        out = norm(residual)
    return out, partial(applied_to_rebuilt, norm, rebuild_residual)


def recomputed_when_saved(*recipes: Tuple[torch.Tensor, Callable[[], torch.Tensor]]):
    """Inside the block, autograd keeps each recipe's ``recompute`` instead of its ``tensor``; backward calls it
    to get the tensor back.

    For cheap-to-rebuild tensors (a projection of inputs that are saved anyway) that only a later op keeps
    for backward. ``recompute`` runs under the autocast state of the block, so it reproduces the tensor bit for
    bit; it must only read tensors that stay alive anyway, or it keeps them alive instead. One block takes
    all recipes: of nested saved-tensor hooks only the innermost apply.
    """
    # every tensor saved in the block keeps the hooks alive: strong references here would keep the tensors too
    recipe_refs = [(weakref.ref(tensor), recompute) for tensor, recompute in recipes]
    return _saved_tensors_recomputed(
        recipes[0][0].device.type,
        lambda saved: next((recompute for ref, recompute in recipe_refs if saved is ref()), None))


def output_recomputed_when_saved(output_shape: torch.Size, device_type: str, recompute: Callable[[], torch.Tensor]):
    """Inside the block, the tensor of ``output_shape`` that autograd saves is kept as ``recompute``.

    For an op whose backward reads its own output (softmax): ``recomputed_when_saved`` names the tensors it
    replaces, which an output is not before the op has run. Run only that op in the block; ``recompute``
    follows the same rules as there.
    """
    return _saved_tensors_recomputed(device_type, lambda saved: recompute if saved.shape == output_shape else None)


@contextlib.contextmanager
def _saved_tensors_recomputed(device_type: str, recipe_of: Callable[[torch.Tensor], Optional[Callable]]):
    """Saved-tensor hooks that keep ``recipe_of(saved)`` instead of ``saved`` where it is not None."""
    autocast_state = (torch.is_autocast_enabled(device_type), torch.get_autocast_dtype(device_type))
    recomputes = set()

    def pack(saved):
        recompute = recipe_of(saved)
        if recompute is None:
            return saved
        recomputes.add(id(recompute))
        return recompute

    def unpack(packed):
        if id(packed) not in recomputes:
            return packed
        with torch.no_grad(), torch.autocast(device_type, dtype=autocast_state[1], enabled=autocast_state[0]):
            return packed()

    with torch.autograd.graph.saved_tensors_hooks(pack, unpack):
        yield


# rows of the FFN processed at once when the hidden activations are recomputed: a 2048 x d_ffn float32
# block is 16 MiB, small enough for the allocator to reuse (larger blocks are fresh, page-faulted mappings
# every time) and for the GEMMs to stay efficient
_FFN_CHUNK_ROWS = 2048


class _HiddenRecomputedFFN(torch.autograd.Function):
    """``linear2(relu(linear1(x)))`` that keeps x, not the d_ffn-wide hidden activations, for backward.

    The hidden ReLU output is the largest tensor a transformer layer saves (2048 wide, 8x the model width);
    backward recomputes it with one matmul (not the whole layer, as activation checkpointing would) and applies
    the chain rule of both linears and the ReLU by hand. Forward and backward run over blocks of rows, so no
    full-size hidden tensor is ever allocated. The autocast state of the forward is restored for the
    recomputation, so mixed precision sees the same values.
    """

    @staticmethod
    def forward(ctx, x, weight1, bias1, weight2, bias2):
        device_type = x.device.type
        ctx.autocast = (device_type, torch.is_autocast_enabled(device_type), torch.get_autocast_dtype(device_type))
        ctx.save_for_backward(x, weight1, bias1, weight2)
        blocks = [F.linear(F.relu(F.linear(rows, weight1, bias1), inplace=True), weight2, bias2)
                  for rows in x.reshape(-1, x.shape[-1]).split(_FFN_CHUNK_ROWS)]
        return torch.cat(blocks).view(*x.shape[:-1], -1)

    @staticmethod
    def backward(ctx, grad_out):
        x, weight1, bias1, weight2 = ctx.saved_tensors
        device_type, autocast_enabled, autocast_dtype = ctx.autocast
        need_x, need_weight1, need_bias1, need_weight2, need_bias2 = ctx.needs_input_grad
        grad_out = grad_out.reshape(-1, grad_out.shape[-1])
        x_rows = x.reshape(-1, x.shape[-1])
        grad_x_blocks = []
        grad_weight1 = grad_bias1 = grad_weight2 = 0
        for rows, grad_rows in zip(x_rows.split(_FFN_CHUNK_ROWS), grad_out.split(_FFN_CHUNK_ROWS)):
            with torch.autocast(device_type, dtype=autocast_dtype, enabled=autocast_enabled):
                hidden = F.relu(F.linear(rows, weight1, bias1), inplace=True)
            dtype = hidden.dtype
            grad_rows = grad_rows.to(dtype)
            if need_weight2:
                grad_weight2 = grad_weight2 + grad_rows.t() @ hidden
            grad_hidden = grad_rows @ weight2.to(dtype)
            # ReLU backward written into grad_hidden itself (one fused pass, no boolean mask: 10x faster on CPU)
            torch.ops.aten.threshold_backward.grad_input(grad_hidden, hidden, 0, grad_input=grad_hidden)
            if need_x:
                grad_x_blocks.append(grad_hidden @ weight1.to(dtype))
            if need_weight1:
                grad_weight1 = grad_weight1 + grad_hidden.t() @ rows.to(dtype)
            if need_bias1:
                grad_bias1 = grad_bias1 + grad_hidden.sum(0)
        grad_x = torch.cat(grad_x_blocks).view(x.shape).to(x.dtype) if need_x else None
        return (grad_x, grad_weight1.to(weight1.dtype) if need_weight1 else None,
                grad_bias1.to(bias1.dtype) if need_bias1 else None,
                grad_weight2.to(weight2.dtype) if need_weight2 else None,
                grad_out.sum(0).to(weight2.dtype) if need_bias2 else None)


def feed_forward(x: torch.Tensor, linear1: nn.Linear, dropout: nn.Dropout, linear2: nn.Linear,
                 recompute_hidden: bool = False, rebuild_input: Optional[Callable[[], torch.Tensor]] = None
                 ) -> torch.Tensor:
    """The transformer FFN ``linear2(dropout(relu(linear1(x))))``.

    Args:
        recompute_hidden: in training (``linear1.training`` and autograd on), store x instead of the hidden
            activations and recompute them in backward (``MODEL.ESTS.FFN_RECOMPUTE``); needs dropout 0, like
            every official ESTS config.
        rebuild_input: with ``recompute_hidden``, how backward gets x back (x is a LayerNorm output, and the
            norm keeps its input anyway), so that not even x is stored.
    """
    if recompute_hidden and linear1.training and torch.is_grad_enabled():
        if dropout.p > 0 and dropout.training:
            raise ValueError("MODEL.ESTS.FFN_RECOMPUTE needs MODEL.ESTS.DROPOUT 0: the dropout mask would be redrawn")
        # linear1 only ever reads x as autocast casts it (forward, recomputation, weight gradient): the cast,
        # not a float32 x, is what is kept
        x_cast = autocast_matmul_input(x)
        keep_input = (recomputed_when_saved((x_cast, lambda: autocast_matmul_input(rebuild_input())))
                      if rebuild_input is not None else contextlib.nullcontext())
        with keep_input:
            return _HiddenRecomputedFFN.apply(x_cast, linear1.weight, linear1.bias, linear2.weight, linear2.bias)
    # ReLU in place (linear1's backward does not need its output, and the d_ffn-wide result is a large
    # allocation) on 2-D rows: on a view of N-D linear output, autograd would clone the gradient (CopySlices)
    rows = x.reshape(-1, x.shape[-1])
    return linear2(dropout(F.relu(linear1(rows), inplace=True))).view(*x.shape[:-1], -1)
