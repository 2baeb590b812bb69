"""bench/compare_steps.py passes matching steps and names what differs between two that do not."""
import torch

from bench.compare_steps import compare


def _step(scale_loss=1.0, scale_grad=1.0, extra_grad=False):
    gen = torch.Generator().manual_seed(0)
    grads = {"backbone.w": torch.randn(8, 8, generator=gen), "head.b": torch.randn(5, generator=gen)}
    grads["head.b"] = grads["head.b"] * scale_grad
    if extra_grad:
        grads["new.w"] = torch.ones(3)
    return {"losses": {"loss_ce": torch.tensor(2.0) * scale_loss, "loss_bbox": torch.tensor(0.5)}, "grads": grads}


def test_identical_and_nearly_identical_steps_pass():
    result = compare(_step(), _step(), loss_rtol=1e-3, grad_rtol=1e-2)
    assert result["ok"] and result["max_loss_rel_diff"] == 0 and result["max_grad_rel_l2_error"] == 0
    assert result["losses_compared"] == 2 and result["grads_compared"] == 2
    close = compare(_step(), _step(scale_loss=1 + 1e-4, scale_grad=1 + 1e-3), loss_rtol=1e-3, grad_rtol=1e-2)
    assert close["ok"]
    assert abs(close["max_grad_rel_l2_error"] - 1e-3) < 1e-6


def test_a_loss_or_gradient_off_by_more_than_its_tolerance_is_named():
    result = compare(_step(), _step(scale_loss=1.01, scale_grad=1.5), loss_rtol=1e-3, grad_rtol=1e-2)
    assert not result["ok"]
    assert any(p.startswith("loss loss_ce: relative difference 0.01") for p in result["problems"])
    assert any(p.startswith("grad head.b: relative L2 error 0.5") for p in result["problems"])
    assert result["worst_grads"][0][0] == "head.b"


def test_different_parameter_sets_fail():
    result = compare(_step(), _step(extra_grad=True), loss_rtol=1e-3, grad_rtol=1e-2)
    assert not result["ok"]
    assert "only in the other ['new.w']" in result["problems"][0]
