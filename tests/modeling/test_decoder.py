"""ESTSDecoderLayer: what it keeps for backward is rebuilt exactly."""
import contextlib
import gc
import weakref

import pytest
import torch

from ests_d2.modeling.decoder import ESTSDecoderLayer

BATCH, INSTANCES, SLOTS, DIM, HEADS = 1, 6, 5, 32, 4
SHAPES = [(6, 8), (3, 4)]
NORMS = ["norm_m", "norm3_m", "norm_intra", "norm_inter", "norm1", "norm3"]


def make_layer(rebuild_inputs: bool, seed: int = 0) -> ESTSDecoderLayer:
    torch.manual_seed(seed)
    layer = ESTSDecoderLayer(DIM, 64, len(SHAPES), HEADS, 2, attn_recompute=True, ffn_recompute=True,
                             rebuild_inputs=rebuild_inputs)
    for p in layer.parameters():  # LayerNorms away from the identity, so that a wrong rebuild shows
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
def test_rebuilt_inputs_give_the_stored_outputs_and_gradients_bit_for_bit(dtype):
    results = []
    for rebuild in (False, True):
        layer, inputs = make_layer(rebuild), make_inputs()
        with autocast_context(dtype):
            out = layer(*inputs)[0]
        (out.float() * torch.linspace(-1, 1, out.numel()).view(out.shape)).sum().backward()
        grads = [t.grad for t in inputs if isinstance(t, torch.Tensor) and t.requires_grad]
        results.append((out.detach(), grads + [p.grad for p in layer.parameters()]))
    (out_stored, grads_stored), (out_rebuilt, grads_rebuilt) = results
    assert torch.equal(out_stored, out_rebuilt)
    assert len(grads_stored) == len(grads_rebuilt)
    for stored, rebuilt in zip(grads_stored, grads_rebuilt):
        assert torch.equal(stored, rebuilt)


@pytest.mark.parametrize("dtype", ["fp32", "bf16"])
def test_under_autocast_only_the_first_norm_input_of_a_layer_is_kept(dtype):
    layer, inputs = make_layer(rebuild_inputs=True), make_inputs()
    norm_inputs = {}
    for name in NORMS:
        getattr(layer, name).register_forward_pre_hook(
            lambda _, args, name=name: norm_inputs.__setitem__(name, weakref.ref(args[0])))
    with autocast_context(dtype):
        out = layer(*inputs)[0]
    gc.collect()
    kept = [name for name in NORMS if norm_inputs[name]() is not None]
    # float32: every norm keeps its input sum; bf16: the half-size updates are kept and the sums rebuilt
    assert kept == (NORMS if dtype == "fp32" else ["norm_m"])
    out.float().sum().backward()  # the graph still runs with the rebuilt sums
    assert all(p.grad is not None for p in layer.parameters())


def _two_layers(rebuild_inputs: bool, dtype: str, norm_inputs=None):
    """Two chained layers (the second gets the first's rebuild recipe, as in ESTSDecoder) and their inputs."""
    layers = [make_layer(rebuild_inputs, seed) for seed in (0, 1)]
    if norm_inputs is not None:
        for index, layer in enumerate(layers):
            for name in NORMS:
                getattr(layer, name).register_forward_pre_hook(
                    lambda _, args, key=(index, name): norm_inputs.__setitem__(key, weakref.ref(args[0])))
    inputs = make_inputs()
    with autocast_context(dtype):
        x, rebuild_x = layers[0](*inputs)
        out, _ = layers[1](x, *inputs[1:], rebuild_x)
    return layers, inputs, out


@pytest.mark.parametrize("dtype", ["fp32", "bf16"])
def test_chained_layers_rebuild_bit_for_bit_and_keep_only_the_first_layers_first_norm_input(dtype):
    norm_inputs = {}
    results = []
    for rebuild in (False, True):
        layers, inputs, out = _two_layers(rebuild, dtype, norm_inputs if rebuild else None)
        if rebuild:
            gc.collect()
            kept = sorted(key for key, ref in norm_inputs.items() if ref() is not None)
            # float32: every norm keeps its input sum; bf16: only the first layer's first norm, the second
            # layer's first norm input being rebuilt through the first layer
            assert kept == (sorted((i, name) for i in range(2) for name in NORMS) if dtype == "fp32"
                            else [(0, "norm_m")])
        (out.float() * torch.linspace(-1, 1, out.numel()).view(out.shape)).sum().backward()
        grads = [t.grad for t in inputs if isinstance(t, torch.Tensor) and t.requires_grad]
        results.append([out.detach()] + grads + [p.grad for layer in layers for p in layer.parameters()])
    assert all(torch.equal(stored, rebuilt) for stored, rebuilt in zip(*results))
