"""Multi-scale deformable attention against a naive per-point bilinear loop."""
import math

import pytest
import torch
import torch.nn.functional as F

from ests_d2.modeling.ms_deform_attn import MSDeformAttn
from ests_d2.modeling.ops import ms_deform_attn_sample
from ests_d2.modeling.recompute import MemoryPolicy, Recipe

SAMPLING_RECOMPUTED = MemoryPolicy(recompute_sampling=True)


def _bilinear_zero_padded(value_map: torch.Tensor, x: float, y: float) -> torch.Tensor:
    """value_map (D, H, W) sampled at normalised (x, y): pixel centres at (i + 0.5) / size, zeros outside."""
    _, height, width = value_map.shape
    px, py = x * width - 0.5, y * height - 0.5
    x0, y0 = math.floor(px), math.floor(py)
    out = torch.zeros(value_map.shape[0], dtype=torch.float64)
    for yy, wy in ((y0, 1 - (py - y0)), (y0 + 1, py - y0)):
        for xx, wx in ((x0, 1 - (px - x0)), (x0 + 1, px - x0)):
            if 0 <= yy < height and 0 <= xx < width:
                out += wy * wx * value_map[:, yy, xx].double()
    return out


def _naive(value, shapes, locations, weights):
    batch, _, heads, head_dim = value.shape
    _, queries, _, levels, points, _ = locations.shape
    starts = [0]
    for h, w in shapes:
        starts.append(starts[-1] + h * w)
    out = torch.zeros(batch, queries, heads * head_dim, dtype=torch.float64)
    for b in range(batch):
        for m in range(heads):
            maps = [value[b, starts[l]:starts[l + 1], m].T.reshape(head_dim, h, w) for l, (h, w) in enumerate(shapes)]
            for q in range(queries):
                acc = torch.zeros(head_dim, dtype=torch.float64)
                for l in range(levels):
                    for p in range(points):
                        x, y = locations[b, q, m, l, p].tolist()
                        acc += float(weights[b, q, m, l, p]) * _bilinear_zero_padded(maps[l], x, y)
                out[b, q, m * head_dim:(m + 1) * head_dim] = acc
    return out


def test_sampling_matches_naive_loop_including_out_of_map_points():
    gen = torch.Generator().manual_seed(0)
    shapes = [(5, 7), (3, 4), (1, 2)]
    batch, heads, head_dim, queries, points = 2, 2, 3, 4, 3
    value = torch.randn(batch, sum(h * w for h, w in shapes), heads, head_dim, generator=gen)
    # locations in [-0.3, 1.3]: many samples fall partly or fully outside the maps
    locations = torch.rand(batch, queries, heads, len(shapes), points, 2, generator=gen) * 1.6 - 0.3
    weights = torch.rand(batch, queries, heads, len(shapes) * points, generator=gen).softmax(-1)
    weights = weights.view(batch, queries, heads, len(shapes), points)
    mine = ms_deform_attn_sample(value, shapes, locations, weights)
    assert mine.shape == (batch, queries, heads * head_dim)
    assert torch.allclose(mine.double(), _naive(value, shapes, locations, weights), atol=1e-5)


def test_module_with_box_references_and_padding_mask():
    torch.manual_seed(0)
    shapes = [(6, 8), (3, 4)]
    attn = MSDeformAttn(d_model=16, n_levels=2, n_heads=2, n_points=2)
    with torch.no_grad():  # non-trivial offsets and attention weights
        attn.sampling_offsets.weight.normal_(0, 0.5)
        attn.attention_weights.weight.normal_(0, 0.5)
    tokens = sum(h * w for h, w in shapes)
    query, memory = torch.randn(1, 5, 16), torch.randn(1, tokens, 16)
    boxes = torch.rand(1, 5, 1, 4).expand(-1, -1, 2, -1) * 0.5 + 0.25
    padding = torch.zeros(1, tokens, dtype=torch.bool)
    padding[0, :8] = True
    out = attn(query, boxes, memory, shapes, padding)
    # reference computation: explicit offsets around the box, values zeroed on padding, naive sampling
    value = attn.value_proj(memory).masked_fill(padding[..., None], 0).view(1, tokens, 2, 8)
    offsets = attn.sampling_offsets(query).view(1, 5, 2, 2, 2, 2)
    locations = boxes[:, :, None, :, None, :2] + offsets / 2 * boxes[:, :, None, :, None, 2:] * 0.5
    weights = attn.attention_weights(query).view(1, 5, 2, 4).softmax(-1).view(1, 5, 2, 2, 2)
    expected = attn.output_proj(_naive(value.detach(), shapes, locations.detach(), weights.detach()).float())
    assert torch.allclose(out, expected, atol=1e-5)


@pytest.mark.parametrize("coords", [2, 4])
def test_sampling_locations_are_the_official_expression_bit_for_bit(coords):
    # the module lays the references and the normalizer out over the points for speed: same values required
    torch.manual_seed(0)
    shapes = [(6, 8), (3, 4), (2, 1)]
    attn = MSDeformAttn(d_model=16, n_levels=3, n_heads=2, n_points=4)
    with torch.no_grad():
        attn.sampling_offsets.weight.normal_(0, 0.5)
    query = torch.randn(2, 7, 16)
    references = torch.rand(2, 7, 3, coords)
    offsets = attn.sampling_offsets(query).view(2, 7, 2, 3, 4, 2)
    if coords == 2:
        normalizer = torch.tensor([[w, h] for h, w in shapes], dtype=torch.float32)
        official = references[:, :, None, :, None, :] + offsets / normalizer[None, None, None, :, None, :]
    else:
        official = (references[:, :, None, :, None, :2]
                    + offsets / 4 * references[:, :, None, :, None, 2:] * 0.5)
    assert torch.equal(attn._sampling_locations(query.reshape(-1, 16), references, shapes), official)


def test_official_initial_offsets():
    attn = MSDeformAttn(d_model=32, n_levels=3, n_heads=8, n_points=4)
    bias = attn.sampling_offsets.bias.view(8, 3, 4, 2)
    assert torch.allclose(bias[0, :, :, 0], torch.tensor([1.0, 2, 3, 4]).expand(3, 4))  # head 0 points along +x
    assert torch.allclose(bias[2, 0, 0], torch.tensor([0.0, 1.0]), atol=1e-6)  # head 2 along +y
    assert torch.allclose(bias[1, 1, 1], torch.tensor([2.0, 2.0]))  # diagonal heads scaled by max(|cos|, |sin|)
    assert attn.attention_weights.weight.abs().sum() == 0 and attn.sampling_offsets.weight.abs().sum() == 0


def test_sampling_stays_float32_under_autocast(monkeypatch):
    torch.manual_seed(0)
    attn = MSDeformAttn(d_model=16, n_levels=1, n_heads=2, n_points=2, sample_in_fp32=True)
    query, memory = torch.randn(1, 3, 16), torch.randn(1, 12, 16)
    points = torch.rand(1, 3, 1, 2)
    reference = attn(query, points, memory, [(3, 4)])
    seen = []
    embedding_bag = F.embedding_bag

    def spy(indices, value, **kwargs):
        seen.append((value.dtype, kwargs["per_sample_weights"].dtype))
        return embedding_bag(indices, value, **kwargs)

    monkeypatch.setattr(F, "embedding_bag", spy)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = attn(query, points, memory, [(3, 4)])
    assert seen and all(v == torch.float32 and g == torch.float32 for v, g in seen)
    assert torch.allclose(out.float(), reference, atol=5e-2)


def test_recomputing_the_samples_in_backward_gives_the_same_gradients():
    gen = torch.Generator().manual_seed(1)
    shapes = [(4, 6), (2, 3)]
    value = torch.randn(2, 30, 2, 4, generator=gen)
    locations = torch.rand(2, 5, 2, 2, 3, 2, generator=gen) * 1.2 - 0.1
    weights = torch.rand(2, 5, 2, 2, 3, generator=gen)
    grads = []
    for recompute in (False, True):
        inputs = [t.clone().requires_grad_() for t in (value, locations, weights)]
        out = ms_deform_attn_sample(inputs[0], shapes, inputs[1], inputs[2], recompute_sampling=recompute)
        (out * torch.linspace(-1, 1, out.numel()).view_as(out)).sum().backward()
        grads.append((out.detach(), [t.grad for t in inputs]))
    (out0, g0), (out1, g1) = grads
    assert torch.equal(out0, out1)
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(g0, g1))


def _grid_sample_reference(value, shapes, locations, weights):
    """The official per-level grid_sample formulation (the math the bag formulation must reproduce)."""
    batch, _, heads, head_dim = value.shape
    _, queries, _, levels, points, _ = locations.shape
    grids = 2 * locations - 1
    out = 0
    for level, maps in enumerate(value.split([h * w for h, w in shapes], dim=1)):
        maps = maps.permute(0, 2, 3, 1).reshape(batch * heads, head_dim, *shapes[level])
        grid = grids[:, :, :, level].transpose(1, 2).reshape(batch * heads, queries, points, 2)
        sampled = F.grid_sample(maps, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        level_weights = weights[:, :, :, level].transpose(1, 2).reshape(batch * heads, 1, queries, points)
        out = out + (sampled * level_weights).sum(-1)
    return out.view(batch, heads * head_dim, queries).transpose(1, 2)


@pytest.mark.parametrize("recompute", [False, True])
def test_gradients_match_the_grid_sample_formulation(recompute):
    gen = torch.Generator().manual_seed(2)
    shapes = [(5, 7), (3, 4), (1, 2)]
    value = torch.randn(2, 49, 2, 4, generator=gen, dtype=torch.float64)
    locations = torch.rand(2, 6, 2, 3, 3, 2, generator=gen, dtype=torch.float64) * 1.4 - 0.2
    weights = torch.rand(2, 6, 2, 3, 3, generator=gen, dtype=torch.float64)
    upstream = torch.randn(2, 6, 8, generator=gen, dtype=torch.float64)
    _assert_outputs_and_gradients_match_grid_sample(shapes, value, locations, weights, upstream, recompute)


def _assert_outputs_and_gradients_match_grid_sample(shapes, value, locations, weights, upstream, recompute):
    results = []
    for fn in (lambda *a: ms_deform_attn_sample(*a, recompute_sampling=recompute), _grid_sample_reference):
        inputs = [t.clone().requires_grad_() for t in (value, locations, weights)]
        out = fn(inputs[0], shapes, inputs[1], inputs[2])
        (out * upstream).sum().backward()
        results.append([out.detach()] + [t.grad for t in inputs])
    for name, mine, ref in zip(("output", "value", "locations", "weights"), *results):
        assert torch.allclose(mine, ref, atol=1e-10), f"{name}: {(mine - ref).abs().max():.3g}"


@pytest.mark.parametrize("needs", [(True, False, False), (False, True, False), (False, False, True), (True, True, True)])
def test_hand_written_backward_passes_gradcheck_for_any_subset_of_inputs(needs):
    gen = torch.Generator().manual_seed(3)
    shapes = [(3, 5), (2, 2)]
    # samples near the map borders and outside them, and two batch images
    inputs = (torch.randn(2, 19, 2, 3, generator=gen, dtype=torch.float64),
              torch.rand(2, 4, 2, 2, 2, 2, generator=gen, dtype=torch.float64) * 1.3 - 0.15,
              torch.rand(2, 4, 2, 2, 2, generator=gen, dtype=torch.float64))
    inputs = [t.requires_grad_(need) for t, need in zip(inputs, needs)]
    assert torch.autograd.gradcheck(
        lambda v, loc, w: ms_deform_attn_sample(v, shapes, loc, w, recompute_sampling=True), inputs
    )


@pytest.mark.parametrize("recompute", [False, True])
def test_samples_far_outside_every_map_read_zeros_and_get_grid_sample_gradients(recompute):
    # corners up to 3 map sizes away on both sides: the canvas clamps them onto its zero border
    gen = torch.Generator().manual_seed(4)
    shapes = [(4, 9), (2, 3), (1, 1)]
    value = torch.randn(2, 43, 2, 3, generator=gen, dtype=torch.float64)
    locations = torch.rand(2, 7, 2, 3, 2, 2, generator=gen, dtype=torch.float64) * 7 - 3
    # level 0 is 9 wide: x = loc * 9 - 0.5 = -0.7 (only the right corners inside), 8.3 (only the left ones)
    locations[0, 0, 0, 0, 0] = torch.tensor([-0.2 / 9, 0.4], dtype=torch.float64)
    locations[0, 0, 0, 0, 1] = torch.tensor([8.8 / 9, 0.4], dtype=torch.float64)
    weights = torch.rand(2, 7, 2, 3, 2, generator=gen, dtype=torch.float64)
    upstream = torch.randn(2, 7, 6, generator=gen, dtype=torch.float64)
    _assert_outputs_and_gradients_match_grid_sample(shapes, value, locations, weights, upstream, recompute)


def test_half_precision_sampling_reads_the_right_canvas_cells():
    # a 300-wide level: canvas cells far beyond the integers bfloat16 represents exactly (up to 256); the
    # values are a ramp in x, so bfloat16's coarse locations cost a little, a wrongly indexed cell a lot
    gen = torch.Generator().manual_seed(5)
    shapes = [(3, 300)]
    ramp = (torch.arange(300, dtype=torch.float32) / 300).repeat(3)
    value = torch.stack([ramp, torch.ones(900)], -1).view(1, 900, 1, 2)
    locations = torch.rand(1, 50, 1, 1, 2, 2, generator=gen) * torch.tensor([0.9, 0.4]) + torch.tensor([0.05, 0.3])
    weights = torch.rand(1, 50, 1, 1, 2, generator=gen)
    expected = (weights * (locations[..., 0] * 300 - 0.5) / 300).sum((2, 3, 4))  # bilinear of a ramp is exact
    half = ms_deform_attn_sample(value.bfloat16(), shapes, locations.bfloat16(), weights.bfloat16())
    assert half.dtype == torch.bfloat16
    assert torch.allclose(half[..., 0].float(), expected, atol=0.02)


def _saved_dtypes_by_numel(fn):
    saved = {}
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.setdefault(t.numel(), set()).add(t.dtype) or t,
                                                  lambda t: t):
        out = fn()
    return out, saved


def test_low_precision_inputs_are_saved_as_they_came_and_give_the_upcast_gradients():
    # autocast hands over bfloat16 values and softmax weights; sampling in float32 after an outside upcast
    # (autograd's ToCopy) is the reference: same outputs and gradients, bit for bit, but half the saved bytes
    gen = torch.Generator().manual_seed(6)
    shapes = [(4, 6), (2, 3)]
    value = torch.randn(2, 30, 2, 4, generator=gen).bfloat16()
    locations = torch.rand(2, 5, 2, 2, 3, 2, generator=gen) * 1.2 - 0.1
    weights = torch.rand(2, 5, 2, 2, 3, generator=gen).bfloat16()
    upstream = torch.randn(2, 5, 8, generator=gen)
    results = []
    for inside in (False, True):
        inputs = [t.clone().requires_grad_() for t in (value, locations, weights)]
        if inside:
            out, saved = _saved_dtypes_by_numel(lambda: ms_deform_attn_sample(
                inputs[0], shapes, inputs[1], inputs[2], recompute_sampling=True, compute_dtype=torch.float32))
        else:
            out = ms_deform_attn_sample(inputs[0].float(), shapes, inputs[1], inputs[2].float(),
                                        recompute_sampling=True)
        (out * upstream).sum().backward()
        results.append([out.detach()] + [t.grad for t in inputs])
    for name, mine, ref in zip(("output", "value", "locations", "weights"), results[1], results[0]):
        assert mine.dtype == ref.dtype and torch.equal(mine, ref), name
    assert saved[value.numel()] == {torch.bfloat16} and saved[weights.numel()] == {torch.bfloat16}


@pytest.mark.parametrize("recompute", [False, True])
def test_low_precision_values_are_upcast_into_the_canvas_without_a_full_copy(recompute):
    # the canvas is float32 anyway; an upcast copy of the whole value map beside it would be one more
    # value-sized float32 tensor at the sampling's peak (33 MiB per call at 640x640)
    from torch.utils._python_dispatch import TorchDispatchMode

    gen = torch.Generator().manual_seed(7)
    shapes = [(4, 6), (2, 3)]
    value = torch.randn(2, 30, 2, 4, generator=gen).bfloat16().requires_grad_()
    locations = (torch.rand(2, 5, 2, 2, 3, 2, generator=gen) * 1.2 - 0.1).requires_grad_()
    weights = torch.rand(2, 5, 2, 2, 3, generator=gen).bfloat16().requires_grad_()
    made = []

    class Outputs(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            made.extend((str(func), t.dtype, tuple(t.shape)) for t in (out if isinstance(out, tuple) else (out,))
                        if isinstance(t, torch.Tensor))
            return out

    with Outputs():
        out = ms_deform_attn_sample(value, shapes, locations, weights, recompute_sampling=recompute,
                                    compute_dtype=torch.float32)
        out.float().sum().backward()
    assert out.dtype == torch.float32 and value.grad.dtype == torch.bfloat16
    assert not [m for m in made if m[1:] == (torch.float32, tuple(value.shape))]


def test_query_is_cast_once_for_both_projections_under_autocast():
    # sampling_offsets and attention_weights read the same query: one bfloat16 copy kept for backward, not two
    torch.manual_seed(0)
    attn = MSDeformAttn(d_model=16, n_levels=1, n_heads=2, n_points=2, policy=SAMPLING_RECOMPUTED)
    for projection in (attn.sampling_offsets, attn.attention_weights):
        torch.nn.init.normal_(projection.weight, std=0.1)  # the official init zeros them: no query gradient
    leaf = torch.randn(1, 7, 16, requires_grad=True)
    query = leaf * 1.0  # a computed activation: autocast caches its casts of leaves only
    memory = torch.randn(1, 12, 16, requires_grad=True)
    storages = set()

    def pack(t):
        if t.dtype == torch.bfloat16 and t.numel() == query.numel() and torch.equal(
                t.reshape(-1), query.detach().bfloat16().reshape(-1)):
            storages.add(t.untyped_storage().data_ptr())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), torch.autocast("cpu", dtype=torch.bfloat16):
        out = attn(query, torch.rand(1, 7, 1, 2), memory, [(3, 4)])
    assert len(storages) == 1
    out.float().sum().backward()
    assert leaf.grad.dtype == torch.float32 and leaf.grad.abs().sum() > 0


def _attn_with_random_projections(policy: MemoryPolicy = SAMPLING_RECOMPUTED):
    torch.manual_seed(0)
    attn = MSDeformAttn(d_model=16, n_levels=2, n_heads=2, n_points=2, policy=policy)
    for projection in (attn.sampling_offsets, attn.attention_weights):
        torch.nn.init.normal_(projection.weight, std=0.1)
    return attn


def _attn_step(attn, autocast):
    gen = torch.Generator().manual_seed(7)
    query = torch.randn(2, 5, 16, generator=gen, requires_grad=True)
    memory = torch.randn(2, 15, 16, generator=gen, requires_grad=True)
    padding = torch.zeros(2, 15, dtype=torch.bool)
    padding[1, -3:] = True
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        out = attn(query, torch.rand(2, 5, 2, 4, generator=gen), memory, [(3, 4), (1, 3)], padding)
    out.float().square().sum().backward()
    return [out.detach(), query.grad, memory.grad] + [p.grad for p in attn.parameters()]


@pytest.mark.parametrize("autocast", [False, True])
@pytest.mark.parametrize("reference_coords", [2, 4])
def test_recomputed_sampling_keeps_neither_values_nor_locations_nor_weights(monkeypatch, reference_coords, autocast):
    import gc
    import weakref

    from ests_d2.modeling import ms_deform_attn

    attn = _attn_with_random_projections()
    projected, located, weighted = [], [], []
    attn.value_proj.register_forward_hook(lambda module, inputs, output: projected.append(weakref.ref(output)))
    sampling_locations, sample = attn._sampling_locations, ms_deform_attn.ms_deform_attn_sample

    def spy_locations(*args):
        locations = sampling_locations(*args)
        located.append(weakref.ref(locations))
        return locations

    def spy_sample(value, shapes, locations, weights, *args):  # the weights and the softmax output they view
        weighted.extend([weakref.ref(weights), weakref.ref(weights._base)])
        return sample(value, shapes, locations, weights, *args)

    attn._sampling_locations = spy_locations
    monkeypatch.setattr(ms_deform_attn, "ms_deform_attn_sample", spy_sample)
    query, memory = torch.randn(1, 5, 16, requires_grad=True), torch.randn(1, 15, 16, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        out = attn(query, torch.rand(1, 5, 2, reference_coords), memory, [(3, 4), (1, 3)])
    gc.collect()
    # nothing holds them between forward and backward
    assert len(projected) == len(located) == 1 and len(weighted) == 2
    assert all(ref() is None for ref in projected + located + weighted)
    out.float().sum().backward()
    assert memory.grad.abs().sum() > 0 and attn.value_proj.weight.grad.abs().sum() > 0
    assert attn.attention_weights.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("autocast", [False, True])
def test_recomputed_values_give_the_stored_values_gradients_bit_for_bit(autocast):
    recomputed = _attn_step(_attn_with_random_projections(), autocast)
    stored = _attn_step(_attn_with_random_projections(MemoryPolicy(recompute_sampling=True, use_recipes=False)),
                        autocast)
    assert all(torch.equal(a, b) for a, b in zip(recomputed, stored))


@pytest.mark.parametrize("with_recipe", [False, True])
def test_a_query_with_a_recipe_is_not_kept(with_recipe):
    import gc
    import weakref

    attn = _attn_with_random_projections()
    state, pos = torch.randn(1, 5, 16, requires_grad=True), torch.randn(1, 5, 16)
    query = state + pos
    query_ref = weakref.ref(query)
    memory = torch.randn(1, 15, 16, requires_grad=True)
    out = attn(query, torch.rand(1, 5, 2, 2), memory, [(3, 4), (1, 3)],
               query_recipe=Recipe(lambda: state + pos) if with_recipe else None)
    del query
    gc.collect()
    assert (query_ref() is None) == with_recipe
    out.sum().backward()
    assert state.grad.abs().sum() > 0 and attn.sampling_offsets.weight.grad.abs().sum() > 0
