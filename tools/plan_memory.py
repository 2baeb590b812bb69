#!/usr/bin/env python
"""How much memory does training this config need? Measure real training steps, then plan for a budget.

For each case (AMP off/on x denoising on/off) and each short side, one fresh process runs two real
training steps (forward + loss + backward + AdamW step) of build_model(cfg) on a synthetic crowded batch
at the worst case of the input sizes (short side s, long side at INPUT.MAX_SIZE_TRAIN) and reports its
peak memory (CUDA: max_memory_allocated; CPU: process peak RSS). Writes a table, a JSON file and a PNG
curve of peak memory against image size; with --budget, recommends the largest MAX_SIZE_TRAIN and
images per GPU that fit (see ests_d2/utils/memory_planner.py: recommend for the rule).

Example (a quick CPU look at the tiny config):
    python tools/plan_memory.py --config-file configs/ESTS/Synthetic-Tiny.yaml --sizes 128 192 \\
        --cases fp32+dn amp+dn --budget 8GB --output plan_out
"""
import argparse
import json
import os

import tqdm
from tabulate import tabulate

from ests_d2.config import load_ests_config
from ests_d2.engine.launch import available_device
from ests_d2.utils.memory_planner import (
    CASES, parse_bytes, plot_memory_curve, recommend, run_case, worst_case_shape,
)

GIB = 2**30


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config-file", required=True)
    parser.add_argument("--num-gpus", type=int, default=1, help="to derive images per GPU from SOLVER.IMS_PER_BATCH")
    parser.add_argument("--images-per-gpu", type=int, default=None,
                        help="default: SOLVER.IMS_PER_BATCH // --num-gpus")
    parser.add_argument("--instances", type=int, default=20, help="text instances per image (a crowded image)")
    parser.add_argument("--sizes", type=int, nargs="+", default=None,
                        help="short sides to measure (default: the INPUT.MIN_SIZE_TRAIN choices)")
    parser.add_argument("--cases", nargs="+", choices=sorted(CASES), default=list(CASES))
    parser.add_argument("--budget", type=str, default=None, help="memory per GPU (or host), e.g. 24GB")
    parser.add_argument("--headroom", type=float, default=0.1,
                        help="fraction kept free above the predicted peak (fragmentation, CUDA context)")
    parser.add_argument("--steps", type=int, default=2, help="training steps per measurement")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads per measurement")
    parser.add_argument("--output", default="memory_plan", help="folder for memory_plan.json and memory_curve.png")
    parser.add_argument("--opts", nargs=argparse.REMAINDER, default=[], help="config overrides: KEY VALUE ...")
    return parser.parse_args(argv)


def format_table(rows, headers):
    """Aligned text table, cells printed as given (already formatted numbers stay as they are)."""
    return tabulate(rows, headers=headers, tablefmt="simple", disable_numparse=True, stralign="right")


def main(argv=None):
    args = parse_args(argv)
    cfg = load_ests_config(args.config_file, args.opts)
    device = available_device(cfg.MODEL.DEVICE)
    if device != cfg.MODEL.DEVICE:
        # Measure what can be measured here (CPU peak RSS) rather than fail every case; the table says "cpu".
        args.opts = list(args.opts) + ["MODEL.DEVICE", device]
        cfg.MODEL.DEVICE = device
    images = args.images_per_gpu or max(1, cfg.SOLVER.IMS_PER_BATCH // args.num_gpus)
    max_size = cfg.INPUT.MAX_SIZE_TRAIN
    short_sides = list(cfg.INPUT.MIN_SIZE_TRAIN)
    sizes = sorted(set(args.sizes or short_sides))
    if len(sizes) < 2:
        raise SystemExit("need at least two sizes for a curve: pass --sizes S1 S2 ...")
    os.makedirs(args.output, exist_ok=True)

    jobs = [(case, s) for case in args.cases for s in sizes]
    results = []
    for case, short in tqdm.tqdm(jobs, desc="measuring", unit="step"):
        amp, dn = CASES[case]
        height, width = worst_case_shape(short, max_size)
        result = run_case(args.config_file, args.opts, height, width, images, args.instances, amp, dn,
                          steps=args.steps, threads=args.threads)
        result["case"] = case
        result["short_side"] = short
        results.append(result)
        # a sweep can take long: show each result as it arrives
        peak = f"{result['peak_bytes'] / GIB:.2f} GiB" if "error" not in result else f"failed: {result['error']}"
        tqdm.tqdm.write(f"{case} {height}x{width} x{images}: {peak}")

    print(f"\n{args.config_file}: {args.instances} instances per image, measured with {results[0].get('measure', '?')}")
    print(format_table(_measurement_rows(results), ["case", "short", "HxW", "imgs", "peak GiB", "s/step", "device"]))

    plan = {"config_file": args.config_file, "opts": args.opts, "images_per_gpu": images, "max_size_train": max_size,
            "min_size_train": short_sides, "instances": args.instances, "measurements": results}
    budget = parse_bytes(args.budget) if args.budget else None
    if budget:
        _print_recommendations(args, plan, results, budget, short_sides, max_size, images)

    curve_path = os.path.join(args.output, "memory_curve.png")
    plot_memory_curve(results, curve_path, budget_bytes=budget,
                      title=f"{os.path.basename(args.config_file)}: {images} img/GPU, {args.instances} instances/img")
    with open(os.path.join(args.output, "memory_plan.json"), "w") as f:
        json.dump(plan, f, indent=1)
    print(f"\nwrote {curve_path} and {os.path.join(args.output, 'memory_plan.json')}")
    return plan


def _measurement_rows(results):
    rows = []
    for r in results:
        if "error" in r:
            rows.append([r["case"], r["short_side"], f"{r['height']}x{r['width']}", r["images"], "failed", "-",
                         r["error"][:60]])
        else:
            rows.append([r["case"], r["short_side"], f"{r['height']}x{r['width']}", r["images"],
                         f"{r['peak_bytes'] / GIB:.2f}", f"{r['seconds_per_step']:.2f}", r["device"]])
    return rows


def _print_recommendations(args, plan, results, budget, short_sides, max_size, images):
    """Add the budget's recommendations to ``plan`` and print them as a table."""
    plan["budget_bytes"] = budget
    plan["headroom"] = args.headroom
    plan["recommendations"] = {}
    print(f"\nBudget {budget / GIB:.1f} GiB, keeping {args.headroom:.0%} headroom; rule: peak memory interpolated "
          "piecewise-linearly in batch pixel count (images x H x W) on the measured points, extended linearly "
          "beyond them; worst-case image for MAX_SIZE_TRAIN M = min(max(MIN_SIZE_TRAIN), M) x M.")
    rec_rows = []
    for case in args.cases:
        rec = recommend([r for r in results if r["case"] == case], budget, short_sides, max_size, images,
                        headroom=args.headroom)
        plan["recommendations"][case] = rec
        if "error" in rec:
            rec_rows.append([case, "-", "-", "-", rec["error"]])
        else:
            rec_rows.append([case, "yes" if rec["fits_configured"] else "NO", rec["max_size_train"] or "-",
                             "-" if rec["images_per_gpu"] is None else rec["images_per_gpu"], rec.get("note", "")])
    print(format_table(rec_rows, ["case", f"fits {images} img @ {max_size}",
                                  f"largest MAX_SIZE_TRAIN @ {images} img", f"most img @ {max_size}", "note"]))


if __name__ == "__main__":
    main()
