"""Measure the peak memory of real ESTS training steps and plan the largest sizes that fit a budget.

One measurement = one fresh process (``python -m ests_d2.utils.memory_planner ...``, printing one JSON line),
so that each peak belongs to exactly one case: the peak RSS of a process never goes down, and the CUDA
caching allocator keeps blocks of earlier cases. A step is what the trainer does: ``build_model(cfg)`` in
train mode, forward + loss + backward + AdamW step, on a synthetic batch in the mapper's output contract
(docs/ARCHITECTURE.md) at the worst case of the configured input sizes. Two steps are run so that the
second one's forward already sees the optimizer's moments (allocated lazily at the first step).

Peak memory: CUDA ``torch.cuda.max_memory_allocated`` (and ``max_memory_reserved``, what the caching
allocator took from the driver); CPU: the process peak RSS (``resource.getrusage().ru_maxrss``), which also
counts the Python interpreter and the imported libraries, because that is what a CPU run needs.
"""
import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from ests_d2.config import load_ests_config

# name -> (AMP enabled, denoising enabled)
CASES: Dict[str, Tuple[bool, bool]] = {
    "fp32+dn": (False, True),
    "fp32": (False, False),
    "amp+dn": (True, True),
    "amp": (True, False),
}
_PACKAGE_ROOT = str(Path(__file__).resolve().parents[2])  # the folder holding ests_d2/


def worst_case_shape(short_side: int, max_size: int) -> Tuple[int, int]:
    """(height, width) with the most pixels that ResizeShortestEdge(short_side, max_size) can produce.

    The long side is capped at ``max_size``; an image at least ``max_size / short_side`` times wider than
    tall keeps the short side and reaches the cap, so the largest result is ``short x max_size`` (both
    capped when the short side alone exceeds the cap).
    """
    return min(short_side, max_size), max_size


def worst_case_pixels(short_sides: Sequence[int], max_size: int) -> int:
    """Pixel count of the largest training image for the configured short-side choices and cap."""
    height, width = worst_case_shape(max(short_sides), max_size)
    return height * width


def synthetic_batch(cfg, height: int, width: int, num_images: int, num_instances: int, seed: int = 0) -> List[Dict]:
    """Training inputs per the mapper contract: uint8 (3,H,W) images and ``instances`` with
    gt_boxes (XYXY), gt_classes (0), gt_beziers (n,16) straight text lines, gt_rec (n,T) full-length words.

    The instances tile the image in a grid (a crowded image); every word uses all ``MAX_TEXT_LEN``
    slots, the most recognition work the targets can ask for.
    """
    from ests_d2.structures import build_vocabulary
    from ests_d2.structures.text_instances import straight_text_instances

    ests = cfg.MODEL.ESTS
    vocab = build_vocabulary(cfg)
    gen = torch.Generator().manual_seed(seed)
    columns = max(1, int(np.ceil(np.sqrt(num_instances))))
    rows = max(1, int(np.ceil(num_instances / columns)))
    cell_w, cell_h = width / columns, height / rows
    batch = []
    for image_index in range(num_images):
        boxes = []
        for k in range(num_instances):
            x0, y0 = (k % columns) * cell_w + 0.1 * cell_w, (k // columns) * cell_h + 0.2 * cell_h
            boxes.append([x0, y0, x0 + 0.8 * cell_w, y0 + 0.6 * cell_h])
        chars = torch.randint(0, len(vocab.characters), (num_instances, ests.MAX_TEXT_LEN), generator=gen)
        instances = straight_text_instances((height, width), boxes, chars)
        image = torch.randint(0, 256, (3, height, width), dtype=torch.uint8, generator=gen)
        batch.append({"image": image, "height": height, "width": width, "image_id": image_index,
                      "instances": instances})
    return batch


def _peak_rss_bytes() -> int:
    # ru_maxrss is in KiB on Linux, in bytes on macOS.
    scale = 1 if sys.platform == "darwin" else 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale


def measure_training_step(cfg, height: int, width: int, num_images: int, num_instances: int,
                          amp: bool, steps: int = 2) -> Dict:
    """Run ``steps`` real training steps in this process and return the peak memory and timing.

    AMP is CUDA float16 autocast with a GradScaler, or CPU bfloat16 autocast (no scaler needed).
    """
    from detectron2.modeling import build_model

    import ests_d2.modeling  # noqa: F401  (registers the meta-architecture)

    device = torch.device(cfg.MODEL.DEVICE)
    on_cuda = device.type == "cuda"
    torch.manual_seed(0)
    model = build_model(cfg).train()
    params = [p for p in model.parameters() if p.requires_grad]
    # One parameter group: the trainer's backbone / rest split changes learning rates, not memory.
    optimizer = torch.optim.AdamW(params, lr=cfg.SOLVER.BASE_LR, weight_decay=cfg.SOLVER.WEIGHT_DECAY)
    amp_dtype = torch.float16 if on_cuda else torch.bfloat16
    scaler = torch.amp.GradScaler(device.type, enabled=amp and on_cuda)
    batch = synthetic_batch(cfg, height, width, num_images, num_instances)
    if on_cuda:
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    rss_before_steps = _peak_rss_bytes()
    step_seconds = []
    for _ in range(steps):
        start = time.perf_counter()
        with torch.autocast(device.type, dtype=amp_dtype, enabled=amp):
            losses = model(batch)
        total = sum(losses.values())
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(total).backward()
        scaler.step(optimizer)
        scaler.update()
        if on_cuda:
            torch.cuda.synchronize(device)
        step_seconds.append(time.perf_counter() - start)
    result = {
        "device": str(device), "height": height, "width": width, "images": num_images,
        "instances": num_instances, "amp": amp, "amp_dtype": str(amp_dtype).replace("torch.", "") if amp else None,
        "dn": bool(cfg.MODEL.ESTS.DN.ENABLED), "steps": steps, "loss": float(total.detach()),
        "seconds_per_step": min(step_seconds), "trainable_parameters": sum(p.numel() for p in params),
    }
    if on_cuda:
        result["peak_bytes"] = torch.cuda.max_memory_allocated(device)
        result["peak_reserved_bytes"] = torch.cuda.max_memory_reserved(device)
        result["measure"] = "torch.cuda.max_memory_allocated"
    else:
        result["peak_bytes"] = _peak_rss_bytes()
        result["rss_before_steps_bytes"] = rss_before_steps
        result["measure"] = "process peak RSS"
    return result


def run_case(config_file: str, opts: Sequence[str], height: int, width: int, num_images: int,
             num_instances: int, amp: bool, dn: bool, steps: int = 2, threads: Optional[int] = None) -> Dict:
    """``measure_training_step`` in a fresh process; returns its JSON (``error`` set when the case failed,
    e.g. out of memory, so that one failed size does not stop a sweep)."""
    cmd = [sys.executable, "-m", "ests_d2.utils.memory_planner", "--config-file", config_file,
           "--height", str(height), "--width", str(width), "--images", str(num_images),
           "--instances", str(num_instances), "--steps", str(steps), "--dn", "on" if dn else "off"]
    cmd += ["--amp"] if amp else []
    cmd += ["--threads", str(threads)] if threads else []
    cmd += ["--opts", *opts] if opts else []
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (_PACKAGE_ROOT, env.get("PYTHONPATH")) if p)
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or [f"exit code {proc.returncode}"]
        return {"height": height, "width": width, "images": num_images, "amp": amp, "dn": dn,
                "error": tail[0][:300]}
    return json.loads(lines[-1])


def fit_curve(pixels: Sequence[float], peaks: Sequence[float]):
    """Peak memory as a function of batch pixel count: piecewise-linear through the measured points,
    extended beyond them by the straight line through the two outermost points on that side.

    Returns ``(peak_at, pixels_for)``: peak at a pixel count, and the largest pixel count whose peak
    stays within a byte budget (None if even the smallest measured batch's extension does not fit).
    """
    order = np.argsort(pixels)
    xs, ys = np.asarray(pixels, float)[order], np.asarray(peaks, float)[order]
    if len(xs) < 2:
        raise ValueError("the curve needs at least two measured sizes")
    low_slope = (ys[1] - ys[0]) / (xs[1] - xs[0])
    high_slope = (ys[-1] - ys[-2]) / (xs[-1] - xs[-2])

    def peak_at(x: float) -> float:
        if x < xs[0]:
            return ys[0] + low_slope * (x - xs[0])
        if x > xs[-1]:
            return ys[-1] + high_slope * (x - xs[-1])
        return float(np.interp(x, xs, ys))

    def pixels_for(budget: float) -> Optional[float]:
        if budget >= ys[-1]:
            return float("inf") if high_slope <= 0 else xs[-1] + (budget - ys[-1]) / high_slope
        # the largest measured segment start that fits, then solve on that segment
        for i in range(len(xs) - 1, 0, -1):
            if ys[i - 1] <= budget:
                slope = (ys[i] - ys[i - 1]) / (xs[i] - xs[i - 1])
                return xs[i] if slope <= 0 else xs[i - 1] + (budget - ys[i - 1]) / slope
        if low_slope <= 0:
            return None
        x = xs[0] - (ys[0] - budget) / low_slope
        return x if x > 0 else None

    return peak_at, pixels_for


def recommend(measurements: Sequence[Dict], budget_bytes: float, short_sides: Sequence[int], max_size: int,
              images_per_gpu: int, headroom: float = 0.1, size_step: int = 32) -> Dict:
    """For one case's measurements: the largest MAX_SIZE_TRAIN (at the configured images per GPU) and the
    most images per GPU (at the configured MAX_SIZE_TRAIN) whose predicted peak x (1 + headroom) fits.

    Rule: peak memory is modelled as a function of the pixels in one batch (images x H x W, padded
    worst-case images), interpolated on the measured curve (``fit_curve``). The worst-case image for a
    MAX_SIZE_TRAIN M has ``min(max(MIN_SIZE_TRAIN), M) x M`` pixels. MAX_SIZE_TRAIN is searched in steps
    of ``size_step`` pixels.
    """
    ok = [m for m in measurements if "error" not in m]
    if len(ok) < 2:
        return {"error": "fewer than two successful measurements"}
    batch_pixels = [m["images"] * m["height"] * m["width"] for m in ok]
    _, pixels_for = fit_curve(batch_pixels, [m["peak_bytes"] for m in ok])
    limit = pixels_for(budget_bytes / (1.0 + headroom))
    limit = None if limit is None else float(limit)  # plain floats: the plan is written as JSON
    if limit is None:
        return {"max_size_train": None, "images_per_gpu": 0, "fits_configured": False}
    if limit == float("inf"):
        return {"max_size_train": None, "images_per_gpu": None, "fits_configured": True,
                "note": "peak does not grow over the measured sizes (fixed costs dominate): measure larger --sizes"}
    best_size = None
    size = size_step
    while size <= 16384 and images_per_gpu * worst_case_pixels(short_sides, size) <= limit:
        best_size = size
        size += size_step
    per_image = worst_case_pixels(short_sides, max_size)
    result = {"max_size_train": best_size, "images_per_gpu": int(min(limit // per_image, 10**6)),
              "fits_configured": bool(images_per_gpu * per_image <= limit)}
    reach = limit / max(batch_pixels)
    if reach > 1.5:  # far outside the measured sizes the straight-line extension is only a guess
        result["note"] = f"extrapolated to {reach:.1f}x the largest measured batch: measure nearer sizes"
    return result


def plot_memory_curve(measurements: Sequence[Dict], path: str, budget_bytes: Optional[float] = None,
                      title: str = "", dpi: int = 100) -> str:
    """PNG of peak memory (GiB) against the short side, one line per case, the budget as a dashed line."""
    import matplotlib

    matplotlib.use("Agg")  # tools run headless
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for case in dict.fromkeys(m["case"] for m in measurements):
        points = sorted((m["short_side"], m["peak_bytes"] / 2**30, m["height"] * m["width"])
                        for m in measurements if m["case"] == case and "error" not in m)
        if points:
            ax.plot([p[0] for p in points], [p[1] for p in points], "o-", label=case)
    if budget_bytes:
        ax.axhline(budget_bytes / 2**30, color="red", linestyle="--", label=f"budget {budget_bytes / 2**30:.1f} GiB")
    device = next((m["device"] for m in measurements if "device" in m), "?")
    measure = next((m["measure"] for m in measurements if "measure" in m), "peak")
    ax.set_xlabel("short side (px); long side at INPUT.MAX_SIZE_TRAIN")
    ax.set_ylabel(f"peak memory (GiB, {measure})")
    ax.set_title(f"{title} [{device}]", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path


def parse_bytes(text: str) -> float:
    """'24GB' / '24GiB' / '500MB' / '1.5e10' -> bytes (GB and GiB both read as 2**30, as tools print them)."""
    units = {"k": 2**10, "m": 2**20, "g": 2**30, "t": 2**40}
    cleaned = text.strip().lower().replace("ib", "").replace("b", "")
    if cleaned and cleaned[-1] in units:
        return float(cleaned[:-1]) * units[cleaned[-1]]
    return float(cleaned)


def _main():
    parser = argparse.ArgumentParser(description="One training-step memory measurement (prints one JSON line).")
    parser.add_argument("--config-file", required=True)
    parser.add_argument("--height", type=int, required=True)
    parser.add_argument("--width", type=int, required=True)
    parser.add_argument("--images", type=int, default=1)
    parser.add_argument("--instances", type=int, default=20)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--amp", action="store_true")
    parser.add_argument("--dn", choices=["on", "off"], default="on")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--opts", nargs=argparse.REMAINDER, default=[])
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = load_ests_config(args.config_file, args.opts)
    cfg.MODEL.ESTS.DN.ENABLED = args.dn == "on"
    result = measure_training_step(cfg, args.height, args.width, args.images, args.instances, args.amp, args.steps)
    print(json.dumps(result))


if __name__ == "__main__":
    _main()
