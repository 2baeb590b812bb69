"""ESTSDecoderLayer: what it keeps for backward as recipes is redone exactly."""
import contextlib
import gc
import weakref

import pytest
import torch

from ests_d2.modeling.decoder import ESTSDecoderLayer
from ests_d2.modeling.recompute import MemoryPolicy

BATCH, INSTANCES, SLOTS, DIM, HEADS = 1, 6, 5, 32, 4
SHAPES = [(6, 8), (3, 4)]
NORMS = ["norm_m", "norm3_m", "norm_intra", "norm_inter", "norm1", "norm3"]


def make_layer(recipes: bool, seed: int = 0) -> ESTSDecoderLayer:
    torch.manual_seed(seed)
    policy = MemoryPolicy(recompute_sampling=True, recompute_ffn=True, use_recipes=recipes)
    layer = ESTSDecoderLayer(DIM, 64, len(SHAPES), HEADS, 2, policy=policy)
    for p in layer.parameters():  # LayerNorms away from the identity, so that a wrong recipe shows
        p.data.add_(torch.randn_like(p) * 0.1)
    return layer.train()


def make_inputs():
    gen = torch.Generator().manual_seed(1)
    tokens = sum(h * w for h, w in SHAPES)
    x = torch.randn(BATCH, INSTANCES, SLOTS, DIM, generator=gen, requires_grad=True)
    language = torch.randn(BATCH, INSTANCES, SLOTS, DIM, generator=gen, requires_grad=True)
    text_pos = torch.randn(SLOTS, DIM, generator=gen)
    query_pos = torch.randn(BATCH, INSTANCES, DIM, generator=gen, requires_grad=True)
    box_reference = torch.rand(BATCH, INSTANCES, len(SHAPES), 4, generator=gen) * 0.5 + 0.25
    memory = torch.randn(BATCH, tokens, DIM, generator=gen, requires_grad=True)
    padding_mask = torch.zeros(BATCH, tokens, dtype=torch.bool)
    return [x, language, text_pos, query_pos, box_reference, memory, SHAPES, padding_mask, None]


def autocast_context(dtype):
    return torch.autocast("cpu", dtype=torch.bfloat16) if dtype == "bf16" else contextlib.nullcontext()


@pytest.mark.parametrize("dtype", ["fp32", "bf16"])
def test_recipes_give_the_stored_outputs_and_gradients_bit_for_bit(dtype):
    results = []
    for recipes in (False, True):
        layer, inputs = make_layer(recipes), make_inputs()
        with autocast_context(dtype):
            out = layer(*inputs)[0]
        (out.float() * torch.linspace(-1, 1, out.numel()).view(out.shape)).sum().backward()
        grads = [t.grad for t in inputs if isinstance(t, torch.Tensor) and t.requires_grad]
        results.append((out.detach(), grads + [p.grad for p in layer.parameters()]))
    (out_stored, grads_stored), (out_recomputed, grads_recomputed) = results
    assert torch.equal(out_stored, out_recomputed)
    assert len(grads_stored) == len(grads_recomputed)
    for stored, recomputed in zip(grads_stored, grads_recomputed):
        assert torch.equal(stored, recomputed)


@pytest.mark.parametrize("dtype", ["fp32", "bf16"])
def test_under_autocast_only_the_first_norm_input_of_a_layer_is_kept(dtype):
    layer, inputs = make_layer(recipes=True), make_inputs()
    norm_inputs = {}
    for name in NORMS:
        getattr(layer, name).register_forward_pre_hook(
            lambda _, args, name=name: norm_inputs.__setitem__(name, weakref.ref(args[0])))
    with autocast_context(dtype):
        out = layer(*inputs)[0]
    gc.collect()
    kept = [name for name in NORMS if norm_inputs[name]() is not None]
    # float32: every norm keeps its input sum; bf16: the half-size updates are kept and the sums redone
    assert kept == (NORMS if dtype == "fp32" else ["norm_m"])
    out.float().sum().backward()  # the graph still runs with the redone sums
    assert all(p.grad is not None for p in layer.parameters())


def _two_layers(recipes: bool, dtype: str, norm_inputs=None):
    """Two chained layers (the second gets the first's output recipe, as in ESTSDecoder) and their inputs."""
    layers = [make_layer(recipes, seed) for seed in (0, 1)]
    if norm_inputs is not None:
        for index, layer in enumerate(layers):
            for name in NORMS:
                getattr(layer, name).register_forward_pre_hook(
                    lambda _, args, key=(index, name): norm_inputs.__setitem__(key, weakref.ref(args[0])))
    inputs = make_inputs()
    with autocast_context(dtype):
        x, x_recipe = layers[0](*inputs)
        out, _ = layers[1](x, *inputs[1:], x_recipe)
    return layers, inputs, out


@pytest.mark.parametrize("dtype", ["fp32", "bf16"])
def test_chained_layers_redo_bit_for_bit_and_keep_only_the_first_layers_first_norm_input(dtype):
    norm_inputs = {}
    results = []
    for recipes in (False, True):
        layers, inputs, out = _two_layers(recipes, dtype, norm_inputs if recipes else None)
        if recipes:
            gc.collect()
            kept = sorted(key for key, ref in norm_inputs.items() if ref() is not None)
            # float32: every norm keeps its input sum; bf16: only the first layer's first norm, the second
            # layer's first norm input being redone through the first layer
            assert kept == (sorted((i, name) for i in range(2) for name in NORMS) if dtype == "fp32"
                            else [(0, "norm_m")])
        (out.float() * torch.linspace(-1, 1, out.numel()).view(out.shape)).sum().backward()
        grads = [t.grad for t in inputs if isinstance(t, torch.Tensor) and t.requires_grad]
        results.append([out.detach()] + grads + [p.grad for layer in layers for p in layer.parameters()])
    assert all(torch.equal(stored, recomputed) for stored, recomputed in zip(*results))
