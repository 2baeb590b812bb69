"""Where training memory is saved, and how to turn each saving off: the one home of the model's recomputation.

Every saving trades memory kept for backward against work redone in backward; none changes a forward value.
The savings, and how to turn each off:

1. ``MODEL.ESTS.DEFORM_ATTN_RECOMPUTE`` (default on): the deformable sampling keeps only its inputs and recomputes
   its canvas, corner rows and weights in a hand-written backward (``ops/ms_deform_sampling.py``); and those
   inputs (values, sampling points, attention weights and the softmax output) are kept as recipes
   (``MSDeformAttn._recipes``).
2. ``MODEL.ESTS.FFN_RECOMPUTE`` (default on): the FFN keeps its input instead of its d_ffn-wide hidden
   activations, recomputed block by block in a hand-written backward (``feed_forward``); with a recipe of the
   input, not even the input.
3. ``MODEL.ESTS.ACTIVATION_CHECKPOINT`` (default off): every encoder and decoder layer runs again in backward
   (``run_layer``); inside, no recipes and no FFN recomputation (the checkpoint already drops everything).
4. Recipes, always on (no config key: exact): the attention's query and value-map rows (redone from the previous
   layer's norm), the slot attentions' per-head q, k, v and merged heads (``layers.multihead_attention``), the
   norms' float32 input sums under autocast (``residual_norm``), the FFN input. ``MemoryPolicy(use_recipes=False)``
   turns them off: the tests' everything-kept baseline.
5. Always on (exact): one autocast cast of a tensor several matmuls read (``autocast_matmul_input``,
   ``shared_autocast_input``); ``row_mean`` does not keep the RoI features.

Recipes and casts are bit for bit (``torch.equal`` tests against keeping everything); the hand-written backwards
are the same math in another summation order (checked against autograd in float64 and with ``gradcheck``).
The three keys become one frozen ``MemoryPolicy``, built once by ``ESTS.from_config`` and handed unchanged to
every layer. Measured effects: docs/BENCHMARKS.md.
"""
import contextlib
import operator
import weakref
from dataclasses import dataclass
from functools import partial
from typing import Callable, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint


@dataclass(frozen=True)
class MemoryPolicy:
    """What the layers recompute in backward instead of keeping (the config switches, see the module docstring).

    The fields are the config keys; the properties are what a layer does with them.
    """

    recompute_sampling: bool = False  # MODEL.ESTS.DEFORM_ATTN_RECOMPUTE
    recompute_ffn: bool = False  # MODEL.ESTS.FFN_RECOMPUTE
    checkpoint_layers: bool = False  # MODEL.ESTS.ACTIVATION_CHECKPOINT
    use_recipes: bool = True  # no config key: recipes are exact; False gives the tests' everything-kept baseline

    @classmethod
    def from_config(cls, cfg) -> "MemoryPolicy":
        e = cfg.MODEL.ESTS
        return cls(recompute_sampling=e.DEFORM_ATTN_RECOMPUTE, recompute_ffn=e.FFN_RECOMPUTE,
                   checkpoint_layers=e.ACTIVATION_CHECKPOINT)

    @property
    def recipes(self) -> bool:
        """Whether layers keep recipes: not in checkpointed layers, whose checkpoint already drops every saved
        tensor (and saved-tensor hooks do not nest: ours would override the checkpoint's)."""
        return self.use_recipes and not self.checkpoint_layers

    @property
    def ffn_hidden_recomputed(self) -> bool:
        """A checkpointed layer already recomputes the FFN hidden activations; recomputing them once more is waste."""
        return self.recompute_ffn and not self.checkpoint_layers


def run_layer(policy: MemoryPolicy, layer: nn.Module, *args, input_recipe: Optional["Recipe"] = None):
    """``layer(*args, input_recipe)`` -> (output, output recipe); a checkpointed call in training under
    ``checkpoint_layers``, whose output has no recipe: one would keep a tensor the checkpoint frees."""
    if policy.checkpoint_layers and layer.training:
        return checkpoint(layer, *args, use_reentrant=False)[0], None
    return layer(*args, input_recipe)


class Recipe:
    """How to compute a tensor again, bit for bit, in backward: a zero-argument callable.

    A recipe must only read tensors that stay alive anyway (kept by some op for backward), or it keeps them
    alive instead; it runs under the autocast state of the block that saved its tensor.
    """

    __slots__ = ("_compute",)

    def __init__(self, compute: Callable[[], torch.Tensor]):
        self._compute = compute

    def __call__(self) -> torch.Tensor:
        return self._compute()

    def then(self, function: Callable[..., torch.Tensor], *args) -> "Recipe":
        """The recipe of ``function(this tensor, *args)`` (a sum, a norm, a transpose...)."""
        return Recipe(partial(_apply, function, self, args))


def _apply(function, recipe: Recipe, args) -> torch.Tensor:
    return function(recipe(), *args)


def then(recipe: Optional[Recipe], function: Callable[..., torch.Tensor], *args) -> Optional[Recipe]:
    """``recipe.then(function, *args)``, None for no recipe."""
    return None if recipe is None else recipe.then(function, *args)


def saved_as_recipes(*pairs: Tuple[torch.Tensor, Optional[Recipe]]):
    """Inside the block, autograd keeps each pair's recipe instead of its tensor (pairs without a recipe are kept
    as they are); backward calls the recipe to get the tensor back.

    For cheap-to-redo tensors (a projection of inputs kept anyway) that only a later op keeps for backward. One
    block takes all pairs: of nested saved-tensor hooks only the innermost apply.
    """
    pairs = [(tensor, recipe) for tensor, recipe in pairs if recipe is not None]
    if not pairs or not torch.is_grad_enabled():
        return contextlib.nullcontext()
    # every tensor saved in the block keeps the hooks alive: strong references here would keep the tensors too
    refs = [(weakref.ref(tensor), recipe) for tensor, recipe in pairs]
    return _saved_tensors_recomputed(pairs[0][0].device.type,
                                     lambda saved: next((recipe for ref, recipe in refs if saved is ref()), None))


def output_saved_as_recipe(output_shape: torch.Size, device_type: str, recipe: Optional[Recipe]):
    """Inside the block, the tensor of ``output_shape`` that autograd saves is kept as ``recipe`` (None: kept).

    For an op whose backward reads its own output (softmax): ``saved_as_recipes`` names the tensors it replaces,
    which an output is not before the op has run. Run only that op in the block.
    """
    if recipe is None or not torch.is_grad_enabled():
        return contextlib.nullcontext()
    return _saved_tensors_recomputed(device_type, lambda saved: recipe if saved.shape == output_shape else None)


@contextlib.contextmanager
def _saved_tensors_recomputed(device_type: str, recipe_of: Callable[[torch.Tensor], Optional[Recipe]]):
    """Saved-tensor hooks that keep ``recipe_of(saved)`` instead of ``saved`` where it is not None."""
    autocast_state = (torch.is_autocast_enabled(device_type), torch.get_autocast_dtype(device_type))

    def pack(saved):
        recipe = recipe_of(saved)
        return saved if recipe is None else recipe

    def unpack(packed):
        if not isinstance(packed, Recipe):
            return packed
        with torch.no_grad(), torch.autocast(device_type, dtype=autocast_state[1], enabled=autocast_state[0]):
            return packed()

    with torch.autograd.graph.saved_tensors_hooks(pack, unpack):
        yield


def residual_norm(norm: nn.LayerNorm, x: torch.Tensor, update: torch.Tensor, x_recipe: Optional[Recipe],
                  policy: MemoryPolicy) -> Tuple[torch.Tensor, Optional[Recipe]]:
    """``norm(x + update)`` of a post-norm residual block, and its recipe (None when recipes are off).

    Under autocast the update comes from a matmul in half precision while the stream x, and so the sum, is
    float32 (the decoder's stream always; the encoder's on CUDA, whose autocast runs the norms in float32),
    and the norm keeps that float32 sum for backward. When x has a recipe (typically the previous norm's), the
    update is kept instead, at half the size, and backward redoes the sum. Chains of recipes end at a norm whose
    x has none, whose input is kept. In float32 the update is as large as the sum and the sum is kept.
    """
    residual = x + update
    if not policy.recipes:
        return norm(residual), None
    if x_recipe is None or not torch.is_grad_enabled() or update.element_size() >= residual.element_size():
        return norm(residual), Recipe(partial(norm, residual))
    residual_recipe = x_recipe.then(operator.add, update)
    with saved_as_recipes((residual, residual_recipe)):
        out = norm(residual)
    return out, residual_recipe.then(norm)


def autocast_matmul_input(x: torch.Tensor) -> torch.Tensor:
    """``x`` as autocast would cast it for a matmul; ``x`` itself when autocast is off.

    Autocast casts a float32 activation again for every linear that reads it, and each linear keeps its own
    copy for backward. Casting once beforehand gives the linears the same values and one shared copy.
    """
    device_type = x.device.type
    if torch.is_autocast_enabled(device_type) and x.is_floating_point() and x.dtype != torch.float64:
        return x.to(torch.get_autocast_dtype(device_type))
    return x


def matmul_rows(x: torch.Tensor) -> torch.Tensor:
    """(..., C) -> (N, C) rows as autocast casts them: a linear keeps this very 2-D tensor for backward (of an
    N-D input it keeps a 2-D view, which a recipe cannot name)."""
    return autocast_matmul_input(x.reshape(-1, x.shape[-1]))


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
                 policy: MemoryPolicy = MemoryPolicy(), x_recipe: Optional[Recipe] = None) -> torch.Tensor:
    """The transformer FFN ``linear2(dropout(relu(linear1(x))))``.

    With ``policy.ffn_hidden_recomputed``, in training (``linear1.training`` and autograd on), x is kept instead of
    the hidden activations, which backward recomputes; with ``x_recipe`` (x is a LayerNorm output, and the norm
    keeps its input anyway) not even x is kept. Needs dropout 0, like every official ESTS config.
    """
    if policy.ffn_hidden_recomputed and linear1.training and torch.is_grad_enabled():
        if dropout.p > 0 and dropout.training:
            raise ValueError("MODEL.ESTS.FFN_RECOMPUTE needs MODEL.ESTS.DROPOUT 0: the dropout mask would be redrawn")
        # linear1 only ever reads x as autocast casts it (forward, recomputation, weight gradient): the cast,
        # not a float32 x, is what is kept
        x_cast = autocast_matmul_input(x)
        with saved_as_recipes((x_cast, then(x_recipe, autocast_matmul_input))):
            return _HiddenRecomputedFFN.apply(x_cast, linear1.weight, linear1.bias, linear2.weight, linear2.bias)
    # ReLU in place (linear1's backward does not need its output, and the d_ffn-wide result is a large
    # allocation) on 2-D rows: on a view of N-D linear output, autograd would clone the gradient (CopySlices)
    rows = x.reshape(-1, x.shape[-1])
    return linear2(dropout(F.relu(linear1(rows), inplace=True))).view(*x.shape[:-1], -1)
