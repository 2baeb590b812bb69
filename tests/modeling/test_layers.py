"""The memory policy; the FFN with recomputed hidden activations against the plain one; multi-head attention on
SDPA, its recipes changing no bit."""
import pytest
import torch
from detectron2.config import get_cfg
from torch import nn

from ests_d2.config import add_ests_config
from ests_d2.modeling.layers import multihead_attention
from ests_d2.modeling.recompute import MemoryPolicy, Recipe, feed_forward

FFN_RECOMPUTED = MemoryPolicy(recompute_ffn=True)


@pytest.mark.parametrize("checkpoint_layers", [False, True])
def test_memory_policy_is_the_config_keys_and_checkpointed_layers_keep_no_recipes(checkpoint_layers):
    cfg = get_cfg()
    add_ests_config(cfg)
    cfg.MODEL.ESTS.DEFORM_ATTN_RECOMPUTE, cfg.MODEL.ESTS.FFN_RECOMPUTE = False, True
    cfg.MODEL.ESTS.ACTIVATION_CHECKPOINT = checkpoint_layers
    policy = MemoryPolicy.from_config(cfg)
    assert policy == MemoryPolicy(recompute_sampling=False, recompute_ffn=True, checkpoint_layers=checkpoint_layers)
    # saved-tensor hooks do not nest, and the checkpoint already recomputes the whole layer
    assert policy.recipes != checkpoint_layers and policy.ffn_hidden_recomputed != checkpoint_layers
    assert not MemoryPolicy(use_recipes=False).recipes
    with pytest.raises(AttributeError):  # frozen: built once, handed unchanged to every layer
        policy.recompute_ffn = False


def _ffn(dtype=torch.float32, dropout=0.0):
    torch.manual_seed(0)
    return nn.Linear(8, 32).to(dtype), nn.Dropout(dropout), nn.Linear(32, 8).to(dtype)


@pytest.mark.parametrize("x_needs_grad", [True, False])
def test_recomputed_ffn_has_the_plain_outputs_and_gradients(x_needs_grad):
    linear1, dropout, linear2 = _ffn(torch.float64)
    x = torch.randn(2, 5, 8, dtype=torch.float64, requires_grad=x_needs_grad)
    upstream = torch.randn(2, 5, 8, dtype=torch.float64)
    results = []
    for recompute in (False, True):
        out = feed_forward(x, linear1, dropout, linear2, MemoryPolicy(recompute_ffn=recompute))
        params = [x] * x_needs_grad + [linear1.weight, linear1.bias, linear2.weight, linear2.bias]
        results.append([out] + list(torch.autograd.grad(out, params, upstream)))
    for plain, recomputed in zip(*results):
        assert torch.allclose(plain, recomputed, atol=1e-12)


def test_recomputed_ffn_passes_gradcheck():
    linear1, dropout, linear2 = _ffn(torch.float64)
    x = torch.randn(3, 8, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda v: feed_forward(v, linear1, dropout, linear2, FFN_RECOMPUTED), (x,))


def _saved_numels(fn):
    sizes = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: sizes.append(t.numel()) or t, lambda t: t):
        fn()
    return sizes


def test_recomputed_ffn_does_not_keep_the_hidden_activations():
    linear1, dropout, linear2 = _ffn()
    x = torch.randn(64, 8, requires_grad=True)
    hidden_numel = 64 * 32
    assert hidden_numel in _saved_numels(lambda: feed_forward(x, linear1, dropout, linear2, MemoryPolicy()))
    assert hidden_numel not in _saved_numels(lambda: feed_forward(x, linear1, dropout, linear2, FFN_RECOMPUTED))


def test_recomputed_ffn_under_bf16_autocast_matches_the_plain_one():
    linear1, dropout, linear2 = _ffn()
    x = torch.randn(16, 8, requires_grad=True)
    results = []
    for recompute in (False, True):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = feed_forward(x, linear1, dropout, linear2, MemoryPolicy(recompute_ffn=recompute))
        grads = torch.autograd.grad(out.float().square().sum(), [x, linear1.weight, linear2.weight, linear2.bias])
        results.append([out] + list(grads))
    assert results[1][0].dtype == torch.bfloat16
    for plain, recomputed in zip(*results):
        assert plain.dtype == recomputed.dtype
        assert torch.allclose(plain.float(), recomputed.float(), rtol=2e-2, atol=2e-2)


def test_recomputed_ffn_under_autocast_keeps_x_in_the_autocast_dtype():
    # linear1 only ever reads x cast to bfloat16: the float32 x need not be kept (half the bytes)
    linear1, dropout, linear2 = _ffn()
    x = torch.randn(64, 8, requires_grad=True)
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append((t.numel(), t.dtype)) or t, lambda t: t):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = feed_forward(x, linear1, dropout, linear2, FFN_RECOMPUTED)
    assert (x.numel(), torch.bfloat16) in saved and (x.numel(), torch.float32) not in saved
    out.float().sum().backward()
    assert x.grad.dtype == torch.float32 and x.grad.abs().sum() > 0


@pytest.mark.parametrize("autocast", [False, True])
def test_ffn_input_with_a_recipe_from_its_norm_is_not_kept_and_gives_the_same_gradients(autocast):
    import gc
    import weakref
    from functools import partial

    linear1, dropout, linear2 = _ffn()
    norm = nn.LayerNorm(8)
    results = []
    for with_recipe in (False, True):
        residual = torch.randn(16, 8, generator=torch.Generator().manual_seed(3)).requires_grad_()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            x = norm(residual)
            out = feed_forward(x, linear1, dropout, linear2, FFN_RECOMPUTED,
                               Recipe(partial(norm, residual)) if with_recipe else None)
        kept = weakref.ref(x)
        del x
        gc.collect()
        if not autocast:  # float32: the FFN keeps x itself unless it has a recipe
            assert (kept() is None) == with_recipe
        params = [residual, norm.weight, linear1.weight, linear1.bias, linear2.weight, linear2.bias]
        results.append([out] + list(torch.autograd.grad(out.float().square().sum(), params)))
    assert all(torch.equal(a, b) for a, b in zip(*results))


def test_recomputation_refuses_dropout():
    linear1, dropout, linear2 = _ffn(dropout=0.1)
    with pytest.raises(ValueError, match="FFN_RECOMPUTE needs MODEL.ESTS.DROPOUT 0"):
        feed_forward(torch.randn(2, 8, requires_grad=True), linear1, dropout, linear2, FFN_RECOMPUTED)


def _mha_reference(module, query, key, value, attn_mask):
    """nn.MultiheadAttention itself, one leading index at a time ((L, N=1, E) inputs)."""
    lead = query.shape[:-2]
    q, k, v = (t.reshape(-1, *t.shape[-2:]) for t in (query, key, value))
    rows = [module(qi[:, None], ki[:, None], vi[:, None], attn_mask=attn_mask, need_weights=False)[0][:, 0]
            for qi, ki, vi in zip(q, k, v)]
    return torch.stack(rows).view(*lead, *rows[0].shape)


@pytest.mark.parametrize("mask_kind", ["none", "bool", "float"])
def test_multihead_attention_over_several_leading_dims_matches_nn_multihead_attention(mask_kind):
    torch.manual_seed(0)
    module = nn.MultiheadAttention(16, 4).double()
    query = torch.randn(2, 3, 5, 16, dtype=torch.float64, requires_grad=True)
    key = torch.randn(2, 3, 7, 16, dtype=torch.float64, requires_grad=True)
    value = torch.randn(2, 3, 7, 16, dtype=torch.float64, requires_grad=True)
    mask = {"none": None, "bool": torch.rand(5, 7) > 0.6,
            "float": torch.randn(5, 7, dtype=torch.float64)}[mask_kind]
    if mask is not None and mask.dtype == torch.bool:
        mask[:, 0] = False  # every query may attend to something (True = blocked)
    upstream = torch.randn(2, 3, 5, 16, dtype=torch.float64)
    results = []
    for fn in (multihead_attention, _mha_reference):
        out = fn(module, query, key, value, attn_mask=mask)
        results.append([out] + list(torch.autograd.grad(out, [query, key, value, module.in_proj_weight], upstream)))
    for mine, ref in zip(*results):
        assert torch.allclose(mine, ref, atol=1e-10)


def test_multihead_attention_does_not_keep_the_attention_probabilities():
    # 5-D inputs: the fused kernel must be selected, or SDPA's math path saves the (L, S) probabilities
    module = nn.MultiheadAttention(16, 4)
    x = torch.randn(1, 3, 37, 16, requires_grad=True)
    shapes = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: shapes.append(tuple(t.shape)) or t, lambda t: t):
        multihead_attention(module, x, x, x, attn_mask=torch.rand(37, 37) > 0.9, same_qk=True)
    assert shapes and not [s for s in shapes if s[-2:] == (37, 37) and len(s) > 2]


def _attention_step(same_qk, recipes, autocast):
    torch.manual_seed(0)
    module = nn.MultiheadAttention(16, 4)
    gen = torch.Generator().manual_seed(3)
    query, key, value = (torch.randn(2, 3, 5, 16, generator=gen, requires_grad=True) for _ in range(3))
    key_in = query if same_qk else key
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        out = multihead_attention(module, query, key_in, value, attn_mask=torch.rand(5, 5, generator=gen) > 0.7,
                                  same_qk=same_qk, policy=MemoryPolicy(use_recipes=recipes))
    out.float().square().sum().backward()
    return [out.detach(), query.grad, key.grad, value.grad] + [p.grad for p in module.parameters()]


@pytest.mark.parametrize("autocast", [False, True])
@pytest.mark.parametrize("same_qk", [False, True])
def test_attention_projection_recipes_give_the_stored_gradients_bit_for_bit(same_qk, autocast):
    recomputed = _attention_step(same_qk, True, autocast)
    stored = _attention_step(same_qk, False, autocast)
    assert all((a is None and b is None) or torch.equal(a, b) for a, b in zip(recomputed, stored))


@pytest.mark.parametrize("recipes", [False, True])
def test_attention_with_recipes_keeps_neither_the_heads_nor_the_merged_output(monkeypatch, recipes):
    import gc
    import weakref

    module = nn.MultiheadAttention(16, 4)
    kept = []
    sdpa = torch.nn.functional.scaled_dot_product_attention

    def spy(q, k, v, **kwargs):
        kept.extend(weakref.ref(t) for t in (q, k, v))
        return sdpa(q, k, v, **kwargs)

    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", spy)
    module.out_proj.register_forward_pre_hook(lambda _, inputs: kept.append(weakref.ref(inputs[0])))
    x, y = torch.randn(1, 3, 6, 16, requires_grad=True), torch.randn(1, 3, 6, 16, requires_grad=True)
    out = multihead_attention(module, x, y, y, policy=MemoryPolicy(use_recipes=recipes))
    gc.collect()
    assert len(kept) == 4 and all((ref() is None) == recipes for ref in kept)
    out.sum().backward()
    assert x.grad.abs().sum() > 0 and module.in_proj_weight.grad.abs().sum() > 0


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_row_mean_is_avg_pool2d_bit_for_bit_without_keeping_its_input(dtype):
    from ests_d2.modeling.recompute import row_mean

    torch.manual_seed(0)
    x = (torch.randn(6, 4, 8, 5) * 10).to(dtype)
    upstream = torch.randn(6, 4, 1, 5).to(dtype)
    results = []
    for fn in (row_mean, lambda t: torch.nn.functional.avg_pool2d(t, (8, 1), stride=1)):
        leaf = x.clone().requires_grad_()
        saved = []
        with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t.numel()) or t, lambda t: t):
            out = fn(leaf)
        out.backward(upstream)
        results.append((out, leaf.grad, saved))
    (mine, mine_grad, mine_saved), (ref, ref_grad, ref_saved) = results
    assert torch.equal(mine, ref) and torch.equal(mine_grad, ref_grad)
    assert x.numel() in ref_saved and x.numel() not in mine_saved
