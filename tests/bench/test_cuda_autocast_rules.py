"""bench/cuda_autocast_rules.py runs CUDA autocast's float32 operators in float32 inside CPU autocast."""
import torch
import torch.nn.functional as F

from bench.cuda_autocast_rules import CudaAutocastFloat32Rules


def _bf16_activation():
    x, w = torch.randn(4, 8), torch.randn(8, 8)
    return x, w


def test_float32_operators_upcast_low_precision_inputs_and_count_it():
    x, w = _bf16_activation()
    norm = torch.nn.LayerNorm(8)
    with torch.autocast("cpu", dtype=torch.bfloat16), CudaAutocastFloat32Rules() as rules:
        y = F.linear(x, w)  # a matrix product: bf16 on both devices
        assert y.dtype == torch.bfloat16
        assert norm(y).dtype == torch.float32
        assert y.softmax(-1).dtype == torch.float32
        assert torch.exp(y).dtype == torch.float32
        assert (y ** 2).dtype == torch.float32
        assert y.sum().dtype == torch.float32
        assert y.sigmoid().dtype == torch.bfloat16  # not on CUDA's float32 list
        assert y.sum(dtype=torch.bfloat16).dtype == torch.bfloat16  # an explicit dtype wins, as on CUDA
    assert rules.calls_upcast == {"layer_norm": 1, "softmax": 1, "exp": 1, "pow": 1, "sum": 1}


def test_nothing_changes_outside_autocast_or_for_float32_inputs():
    x, w = _bf16_activation()
    with CudaAutocastFloat32Rules() as rules:
        assert x.bfloat16().softmax(-1).dtype == torch.bfloat16  # no autocast: nothing to emulate
        with torch.autocast("cpu", dtype=torch.bfloat16):
            assert x.softmax(-1).dtype == torch.float32
    assert rules.calls_upcast == {}
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert F.linear(x, w).softmax(-1).dtype == torch.bfloat16  # plain CPU autocast, without the rules


def test_upcast_values_and_gradients_are_those_of_the_float32_operator():
    x, w = _bf16_activation()
    x.requires_grad_(True)
    with torch.autocast("cpu", dtype=torch.bfloat16), CudaAutocastFloat32Rules():
        y = F.linear(x, w)
        out = F.layer_norm(y, (8,)).sum()
    out.backward()
    reference = x.detach().clone().requires_grad_(True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y_ref = F.linear(reference, w)
    F.layer_norm(y_ref.float(), (8,)).sum().backward()
    assert torch.equal(x.grad, reference.grad)


def test_the_rules_hold_in_backward_where_recomputations_re_enter_autocast():
    seen = []

    class RecomputesANorm(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            ctx.save_for_backward(x)
            return x.clone()

        @staticmethod
        def backward(ctx, grad):
            x, = ctx.saved_tensors
            with torch.autocast("cpu", dtype=torch.bfloat16):  # as the project's recomputations do
                seen.append(F.layer_norm(x.bfloat16(), (8,)).dtype)
            return grad

    x = torch.randn(4, 8, requires_grad=True)
    with CudaAutocastFloat32Rules():
        RecomputesANorm.apply(x).sum().backward()
    assert seen == [torch.float32] and torch.equal(x.grad, torch.ones(4, 8))
