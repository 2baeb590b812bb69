"""The deformable encoder skips padded tokens as queries, and keeps recipes of what it can redo in backward, changing
no bit."""
import gc
import weakref

import pytest
import torch

from ests_d2.modeling.encoder import DeformableEncoder, encoder_reference_points
from ests_d2.modeling.recompute import MemoryPolicy
from ests_d2.modeling.transformer import valid_ratios_of


def _batch(shapes, valid_hw):
    """Flattened random features and the nearest-downsampled padding masks of images of ``valid_hw``."""
    masks = []
    for h, w in shapes:
        mask = torch.ones(len(valid_hw), h, w, dtype=torch.bool)
        for i, (vh, vw) in enumerate(valid_hw):
            mask[i, :vh * h // shapes[0][0], :vw * w // shapes[0][1]] = False
        masks.append(mask)
    tokens = sum(h * w for h, w in shapes)
    return masks, torch.cat([m.flatten(1) for m in masks], 1), tokens


def test_packed_queries_give_the_all_token_result_on_valid_tokens():
    torch.manual_seed(0)
    shapes = [(8, 10), (4, 5)]
    masks, padding, tokens = _batch(shapes, [(6, 10), (8, 6)])
    valid_ratios = torch.stack([valid_ratios_of(m) for m in masks], 1)
    encoder = DeformableEncoder(2, d_model=16, d_ffn=32, n_levels=2, n_heads=2, n_points=2)
    src, pos = torch.randn(2, tokens, 16, requires_grad=True), torch.randn(2, tokens, 16)
    memory = encoder(src, pos, shapes, valid_ratios, padding)

    reference_points = encoder_reference_points(shapes, valid_ratios)
    expected = src
    for layer in encoder.layers:  # every token as a query, the official way
        expected = layer(expected, pos, reference_points, shapes, padding)[0]
    valid = ~padding
    assert torch.allclose(memory[valid], expected[valid], atol=1e-5)
    assert memory[padding].abs().sum() == 0

    grad_packed, = torch.autograd.grad(memory[valid].sum(), src)
    grad_full, = torch.autograd.grad(expected[valid].sum(), src)
    assert torch.allclose(grad_packed, grad_full, atol=1e-5)


def _everything_recomputed(recipes: bool = True) -> MemoryPolicy:
    return MemoryPolicy(recompute_sampling=True, recompute_ffn=True, use_recipes=recipes)


def _three_layer_encoder(padded: bool, recipes: bool = True):
    """A 3-layer encoder with every recomputation on, and the level shapes, valid ratios and padding of a
    2-image batch (padded: images of different sizes)."""
    torch.manual_seed(0)
    shapes = [(8, 10), (4, 5)]
    masks, padding, tokens = _batch(shapes, [(6, 10), (8, 6)] if padded else [(8, 10), (8, 10)])
    valid_ratios = torch.stack([valid_ratios_of(m) for m in masks], 1)
    encoder = DeformableEncoder(3, _everything_recomputed(recipes), d_model=16, d_ffn=32, n_levels=2, n_heads=2,
                                n_points=2)
    return encoder, shapes, valid_ratios, padding, tokens


def _encoder_step(recipes: bool, autocast: bool, padded: bool):
    # without recipes (attention inputs, norm sums, FFN inputs) everything is kept as computed
    encoder, shapes, valid_ratios, padding, tokens = _three_layer_encoder(padded, recipes)
    for layer in encoder.layers:  # non-zero query projections, so that the query gets gradients through them
        for projection in (layer.self_attn.sampling_offsets, layer.self_attn.attention_weights):
            torch.nn.init.normal_(projection.weight, std=0.1)
    src, pos = torch.randn(2, tokens, 16, requires_grad=True), torch.randn(2, tokens, 16, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        memory = encoder(src, pos, shapes, valid_ratios, padding)
    memory.float().square().sum().backward()
    return [memory.detach(), src.grad, pos.grad] + [p.grad for p in encoder.parameters()]


@pytest.mark.parametrize("padded", [False, True])
@pytest.mark.parametrize("autocast", [False, True])
def test_recipes_of_queries_and_attention_inputs_change_no_bit(autocast, padded):
    # the layers' queries (previous output + pos), value maps and sampling points are redone in backward, and
    # under autocast (the float32 input keeps the stream float32, as CUDA autocast does) the norms' input sums
    # too, through all earlier layers
    recomputed = _encoder_step(True, autocast, padded)
    stored = _encoder_step(False, autocast, padded)
    assert all(torch.equal(a, b) for a, b in zip(recomputed, stored))


def _layer_step(recipes: bool, autocast: bool, norm_inputs=None):
    """One encoder layer on a float32 stream (as on CUDA, whose autocast runs LayerNorm in float32)."""
    from ests_d2.modeling.encoder import DeformableEncoderLayer

    torch.manual_seed(0)
    shapes = [(6, 8), (3, 4)]
    layer = DeformableEncoderLayer(16, 32, 2, 2, 2, policy=_everything_recomputed(recipes)).train()
    for p in layer.parameters():  # LayerNorms away from the identity, so that a wrong recipe shows
        p.data.add_(torch.randn_like(p) * 0.1)
    if norm_inputs is not None:
        for name in ("norm1", "norm2"):
            getattr(layer, name).register_forward_pre_hook(
                lambda _, args, name=name: norm_inputs.__setitem__(name, weakref.ref(args[0])))
    tokens = sum(h * w for h, w in shapes)
    src, pos = torch.randn(1, tokens, 16, requires_grad=True), torch.randn(1, tokens, 16, requires_grad=True)
    reference_points = encoder_reference_points(shapes, torch.ones(1, 2, 2))
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        out, out_recipe = layer(src, pos, reference_points, shapes, torch.zeros(1, tokens, dtype=torch.bool))
    return layer, src, pos, out, out_recipe


@pytest.mark.parametrize("autocast", [False, True])
def test_second_norm_input_redone_under_autocast_changes_no_bit(autocast):
    results = []
    for recipes in (False, True):
        layer, src, pos, out, out_recipe = _layer_step(recipes, autocast)
        # the recipe the next layer's queries use; none without recipes
        assert torch.equal(out_recipe(), out) if recipes else out_recipe is None
        (out.float() * torch.linspace(-1, 1, out.numel()).view(out.shape)).sum().backward()
        results.append([out.detach(), src.grad, pos.grad] + [p.grad for p in layer.parameters()])
    assert all(torch.equal(a, b) for a, b in zip(*results))


@pytest.mark.parametrize("autocast", [False, True])
def test_under_autocast_the_second_norm_keeps_the_half_size_update(autocast):
    norm_inputs = {}
    layer, _, _, out, _ = _layer_step(True, autocast, norm_inputs)
    gc.collect()
    kept = [name for name in ("norm1", "norm2") if norm_inputs[name]() is not None]
    assert kept == (["norm1"] if autocast else ["norm1", "norm2"])
    out.float().sum().backward()
    assert all(p.grad is not None for p in layer.parameters())


@pytest.mark.parametrize("padded", [False, True])
@pytest.mark.parametrize("autocast", [False, True])
def test_after_forward_only_the_first_layer_keeps_its_input_and_first_norm_input(autocast, padded):
    """What the encoder keeps of its float32 stream: the first layer's value map and, under autocast, its
    first norm's input (in float32 every first norm keeps its input: the update is as large)."""
    encoder, shapes, valid_ratios, padding, tokens = _three_layer_encoder(padded)
    seen = {}  # (layer, what) -> weak reference to the storage of the tensor the module read

    def remember(key):
        return lambda _, args: seen.__setitem__(key, weakref.ref(args[0].untyped_storage()))

    for index, layer in enumerate(encoder.layers):
        layer.norm1.register_forward_pre_hook(remember((index, "norm1 input")))
        layer.self_attn.value_proj.register_forward_pre_hook(remember((index, "value rows")))
    src = torch.randn(2, tokens, 16, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        memory = encoder(src, torch.randn(2, tokens, 16), shapes, valid_ratios, padding)
    gc.collect()
    alive = sorted(key for key, ref in seen.items() if ref() is not None)
    first_norms = [(0, "norm1 input")] if autocast else [(i, "norm1 input") for i in range(3)]
    assert alive == sorted(first_norms + [(0, "value rows")])
    memory.float().sum().backward()
    assert all(p.grad is not None for p in encoder.parameters())
