#!/usr/bin/env python
"""Compare two training steps saved by ``bench_model_step.py --save-step`` (say one on CPU, one on CUDA).

Prints every loss that differs by more than --loss-rtol and the parameters whose gradients differ most
(relative L2 error ||b - a|| / ||a||), then one JSON summary line; exits with 1 when a loss or gradient is off
by more than its tolerance or the two files do not hold the same losses and parameters. Run both steps with
``--no-dn-noise``: the denoising noise is drawn on the model's device, and two devices draw different numbers.

    python bench/bench_model_step.py --mode train --size 256 --no-dn-noise --save-step cpu.pt
    python bench/bench_model_step.py --mode train --size 256 --no-dn-noise --save-step cuda.pt --device cuda
    python bench/compare_steps.py cpu.pt cuda.pt
"""
import argparse
import json
import sys

import torch


def compare(reference: dict, other: dict, loss_rtol: float, grad_rtol: float, show: int = 5) -> dict:
    """Differences of ``other`` from ``reference``, and whether they stay inside the tolerances."""
    problems = []
    for kind in ("losses", "grads"):
        missing, extra = reference[kind].keys() - other[kind].keys(), other[kind].keys() - reference[kind].keys()
        if missing or extra:
            problems.append(f"{kind}: only in the reference {sorted(missing)[:show]}, only in the other "
                            f"{sorted(extra)[:show]}")
    loss_errors = {}
    for name in sorted(reference["losses"].keys() & other["losses"].keys()):
        a, b = reference["losses"][name].double(), other["losses"][name].double()
        loss_errors[name] = float((b - a).abs() / a.abs().clamp_min(1e-12))
    grad_errors = {}
    for name in sorted(reference["grads"].keys() & other["grads"].keys()):
        a, b = reference["grads"][name].double(), other["grads"][name].double()
        if a.shape != b.shape:
            problems.append(f"grads: {name} has shape {tuple(a.shape)} against {tuple(b.shape)}")
            continue
        grad_errors[name] = float((b - a).norm() / a.norm().clamp_min(1e-30))
    problems += [f"loss {name}: relative difference {err:.3g} > {loss_rtol:g}"
                 for name, err in loss_errors.items() if err > loss_rtol]
    bad_grads = sorted((err, name) for name, err in grad_errors.items() if err > grad_rtol)
    problems += [f"grad {name}: relative L2 error {err:.3g} > {grad_rtol:g}" for err, name in bad_grads[::-1][:show]]
    if len(bad_grads) > show:
        problems.append(f"... and {len(bad_grads) - show} more gradients over {grad_rtol:g}")
    worst_grads = sorted(grad_errors.items(), key=lambda item: -item[1])[:show]
    return {"ok": not problems, "problems": problems,
            "max_loss_rel_diff": max(loss_errors.values(), default=0.0),
            "max_grad_rel_l2_error": max(grad_errors.values(), default=0.0),
            "worst_grads": [[name, round(err, 6)] for name, err in worst_grads],
            "losses_compared": len(loss_errors), "grads_compared": len(grad_errors)}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("reference")
    parser.add_argument("other")
    parser.add_argument("--loss-rtol", type=float, default=1e-3, help="largest relative difference of a loss")
    parser.add_argument("--grad-rtol", type=float, default=1e-2, help="largest relative L2 error of a gradient")
    args = parser.parse_args()
    result = compare(torch.load(args.reference), torch.load(args.other), args.loss_rtol, args.grad_rtol)
    for problem in result["problems"]:
        print(problem)
    print(json.dumps(result))
    sys.exit(0 if result["ok"] else 1)


if __name__ == "__main__":
    main()
