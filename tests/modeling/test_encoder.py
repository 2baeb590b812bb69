"""The deformable encoder skips padded tokens as queries without changing any valid token's result."""
import pytest
import torch

from ests_d2.modeling.encoder import DeformableEncoder, encoder_reference_points
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


def _encoder_step(monkeypatch, rebuild: bool, autocast: bool, padded: bool):
    import contextlib

    from ests_d2.modeling import ms_deform_attn

    if not rebuild:  # every recipe off: everything is kept as computed
        monkeypatch.setattr(ms_deform_attn, "recomputed_when_saved", lambda *args: contextlib.nullcontext())
    torch.manual_seed(0)
    shapes = [(8, 10), (4, 5)]
    masks, padding, tokens = _batch(shapes, [(6, 10), (8, 6)] if padded else [(8, 10), (8, 10)])
    valid_ratios = torch.stack([valid_ratios_of(m) for m in masks], 1)
    encoder = DeformableEncoder(3, d_model=16, d_ffn=32, n_levels=2, n_heads=2, n_points=2, attn_recompute=True,
                                ffn_recompute=True)
    for layer in encoder.layers:  # non-zero query projections, so that the query gets gradients through them
        for projection in (layer.self_attn.sampling_offsets, layer.self_attn.attention_weights):
            torch.nn.init.normal_(projection.weight, std=0.1)
    src, pos = torch.randn(2, tokens, 16, requires_grad=True), torch.randn(2, tokens, 16, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        memory = encoder(src, pos, shapes, valid_ratios, padding)
    memory.float().square().sum().backward()
    monkeypatch.undo()
    return [memory.detach(), src.grad, pos.grad] + [p.grad for p in encoder.parameters()]


@pytest.mark.parametrize("padded", [False, True])
@pytest.mark.parametrize("autocast", [False, True])
def test_rebuilding_queries_and_attention_inputs_changes_no_bit(monkeypatch, autocast, padded):
    # the layers' queries (previous output + pos), values and sampling points are rebuilt in backward
    rebuilt = _encoder_step(monkeypatch, True, autocast, padded)
    stored = _encoder_step(monkeypatch, False, autocast, padded)
    assert all(torch.equal(a, b) for a, b in zip(rebuilt, stored))
