"""The FFN with recomputed hidden activations against the plain one."""
import pytest
import torch
from torch import nn

from ests_d2.modeling.layers import feed_forward


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
        out = feed_forward(x, linear1, dropout, linear2, recompute_hidden=recompute)
        params = [x] * x_needs_grad + [linear1.weight, linear1.bias, linear2.weight, linear2.bias]
        results.append([out] + list(torch.autograd.grad(out, params, upstream)))
    for plain, recomputed in zip(*results):
        assert torch.allclose(plain, recomputed, atol=1e-12)


def test_recomputed_ffn_passes_gradcheck():
    linear1, dropout, linear2 = _ffn(torch.float64)
    x = torch.randn(3, 8, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda v: feed_forward(v, linear1, dropout, linear2, True), (x,))


def _saved_numels(fn):
    sizes = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: sizes.append(t.numel()) or t, lambda t: t):
        fn()
    return sizes


def test_recomputed_ffn_does_not_keep_the_hidden_activations():
    linear1, dropout, linear2 = _ffn()
    x = torch.randn(64, 8, requires_grad=True)
    hidden_numel = 64 * 32
    assert hidden_numel in _saved_numels(lambda: feed_forward(x, linear1, dropout, linear2, False))
    assert hidden_numel not in _saved_numels(lambda: feed_forward(x, linear1, dropout, linear2, True))


def test_recomputed_ffn_under_bf16_autocast_matches_the_plain_one():
    linear1, dropout, linear2 = _ffn()
    x = torch.randn(16, 8, requires_grad=True)
    results = []
    for recompute in (False, True):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = feed_forward(x, linear1, dropout, linear2, recompute_hidden=recompute)
        grads = torch.autograd.grad(out.float().square().sum(), [x, linear1.weight, linear2.weight, linear2.bias])
        results.append([out] + list(grads))
    assert results[1][0].dtype == torch.bfloat16
    for plain, recomputed in zip(*results):
        assert plain.dtype == recomputed.dtype
        assert torch.allclose(plain.float(), recomputed.float(), rtol=2e-2, atol=2e-2)


def test_recomputation_refuses_dropout():
    linear1, dropout, linear2 = _ffn(dropout=0.1)
    with pytest.raises(ValueError, match="FFN_RECOMPUTE needs MODEL.ESTS.DROPOUT 0"):
        feed_forward(torch.randn(2, 8, requires_grad=True), linear1, dropout, linear2, True)
