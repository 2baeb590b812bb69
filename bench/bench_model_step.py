#!/usr/bin/env python
"""Time one ESTS step (CPU, or CUDA with --device): an eval forward (+ post-processing) or a train forward + loss +
backward.

Full TT fine-tune configuration (ResNet-50, 5 levels, 6+6 layers), random official-style initial weights,
--batch images of 3 x --size x --width (square by default; training: --gt text instances each, 2 by default,
so 50 DN groups = 300 decoder instances). Run one case per process and measure the whole process with
``/usr/bin/time -v`` for the peak RSS, as spec section 11 does (bench/run_benchmarks.py does that for a whole
table):

    /usr/bin/time -v python bench/bench_model_step.py --mode eval  --threads 2
    /usr/bin/time -v python bench/bench_model_step.py --mode train --threads 2 --dtype bf16 --gt 20

The GPU target of issue #7 (training at MAX_SIZE_TRAIN 1600, batch 2, AMP): with MIN_SIZE_TRAIN up to 896 and
aspect-ratio grouping (both images of a batch landscape or both portrait), the largest padded batch is two
896 x 1600 images; SOLVER.AMP's default precision is float16:

    python bench/bench_model_step.py --device cuda --mode train --size 896 --width 1600 --batch 2 --gt 20 --dtype fp16

The last line printed is a JSON record of the case. On a CUDA device (--device cuda) the step is timed with
synchronisation and the allocator peak (torch.cuda.max_memory_allocated) is reported as well (that path is
untested: no GPU was available when it was written). With --track-memory the step also runs under
live_memory.LiveTensorMemory, which follows every tensor storage from its operator to its free: its peak counts
what a CUDA allocator peak counts (parameters, gradients, activations, temporaries; not the libraries, the
allocator's rounding or an op's internal workspace), on any device. It slows the step down (Python on every op).
With --cuda-autocast-rules a CPU bf16/fp16 step keeps in float32 what CUDA autocast would (LayerNorm, softmax,
...: bench/cuda_autocast_rules.py), for an estimate of a GPU's mixed-precision memory.
"""
import argparse
import contextlib
import itertools
import json
import resource
import sys
import time
from pathlib import Path

import psutil
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cuda_autocast_rules import CudaAutocastFloat32Rules  # noqa: E402  (beside this script)
from live_memory import LiveTensorMemory  # noqa: E402


def _cfg():
    """The official TT fine-tune model: the shipped base config (``main`` sets MODEL.DEVICE from --device)."""
    from ests_d2.config import load_ests_config

    return load_ests_config(str(Path(__file__).resolve().parents[1] / "configs" / "Base-ESTS.yaml"))


def _text_boxes(height: int, width: int, count: int) -> torch.Tensor:
    """``count`` word boxes (x0, y0, x1, y1): the two fixed 640-px ones scaled to the image, then a grid of boxes."""
    fixed = torch.tensor([[100.0, 120.0, 300.0, 180.0], [350.0, 400.0, 520.0, 470.0]])
    fixed *= torch.tensor([width, height, width, height]) / 640
    if count <= 2:
        return fixed[:count]
    columns = 4
    rows = -(-(count - 2) // columns)
    cell_w, cell_h = width / columns, height / rows
    grid = [[c * cell_w + 0.1 * cell_w, r * cell_h + 0.3 * cell_h, (c + 0.9) * cell_w, (r + 0.7) * cell_h]
            for r in range(rows) for c in range(columns)]
    return torch.cat([fixed, torch.tensor(grid[:count - 2])])


def _inputs(batch: int, height: int, width: int, with_instances: bool, num_instances: int = 2) -> list:
    """``batch`` random images of one size (different pixels, the same words), as the mapper gives them."""
    from ests_d2.structures import CharVocabulary
    from ests_d2.structures.text_instances import straight_text_instances

    gen = torch.Generator().manual_seed(0)
    vocab = CharVocabulary.from_config(97)
    words = ["TOAST", "crocs"]
    items = []
    for image_id in range(batch):
        item = {"image": torch.randint(0, 256, (3, height, width), dtype=torch.uint8, generator=gen),
                "height": height, "width": width, "image_id": image_id}
        if with_instances:
            boxes = _text_boxes(height, width, num_instances)
            rec = [vocab.encode(words[i % 2], 25) for i in range(len(boxes))]
            item["instances"] = straight_text_instances((height, width), boxes, rec)
        items.append(item)
    return items


# --dtype -> autocast dtype (None: no autocast)
_AUTOCAST_DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def _resident_gib() -> float:
    """Current resident set of this process, to separate the step's own memory from the process's."""
    return psutil.Process().memory_info().rss / 2**30


def _sync(device: str):
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _parse_args():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mode", choices=["eval", "train"], required=True)
    parser.add_argument("--size", type=int, default=640, help="image height (and width, unless --width)")
    parser.add_argument("--width", type=int, help="image width; default: --size (a square image)")
    parser.add_argument("--batch", type=int, default=1, help="images per step")
    parser.add_argument("--gt", type=int, default=2, help="text instances of each training image")
    parser.add_argument("--dtype", choices=sorted(_AUTOCAST_DTYPES), default="fp32",
                        help="bf16 / fp16: autocast around the step (fp16 is SOLVER.AMP's default precision)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--activation-checkpoint", action="store_true", help="MODEL.ESTS.ACTIVATION_CHECKPOINT")
    parser.add_argument("--no-deform-recompute", action="store_true", help="MODEL.ESTS.DEFORM_ATTN_RECOMPUTE off")
    parser.add_argument("--no-ffn-recompute", action="store_true", help="MODEL.ESTS.FFN_RECOMPUTE off")
    parser.add_argument("--no-dn-noise", action="store_true",
                        help="no denoising noise: a step that draws no random numbers that matter, so that two "
                             "devices can be compared (bench/compare_steps.py)")
    parser.add_argument("--save-step", type=Path,
                        help="training: save the step's losses and parameter gradients to this file (torch.save)")
    parser.add_argument("--cuda-autocast-rules", action="store_true",
                        help="on a CPU with --dtype bf16/fp16: run the operators CUDA autocast keeps in float32 in "
                             "float32 (bench/cuda_autocast_rules.py), to estimate a GPU's mixed-precision memory")
    parser.add_argument("--track-memory", action="store_true",
                        help="also report the peak of live tensor memory (bench/live_memory.py; slower)")
    args = parser.parse_args()
    args.width = args.width or args.size
    if args.cuda_autocast_rules and (args.device != "cpu" or args.dtype == "fp32"):
        parser.error("--cuda-autocast-rules emulates CUDA autocast on a CPU: it needs --device cpu and bf16/fp16")
    return args


def _build_model(args):
    """The model of ``_cfg`` with the memory switches of ``args``, built from seed 0."""
    from detectron2.modeling import build_model

    import ests_d2.modeling  # noqa: F401

    cfg = _cfg()
    cfg.MODEL.DEVICE = args.device
    cfg.MODEL.ESTS.ACTIVATION_CHECKPOINT = args.activation_checkpoint
    cfg.MODEL.ESTS.DEFORM_ATTN_RECOMPUTE = not args.no_deform_recompute
    cfg.MODEL.ESTS.FFN_RECOMPUTE = not args.no_ffn_recompute
    if args.no_dn_noise:
        cfg.MODEL.ESTS.DN.LABEL_NOISE_RATIO = 0.0
        cfg.MODEL.ESTS.DN.BOX_NOISE_SCALE = 0.0
    torch.manual_seed(0)
    return build_model(cfg)


def _train_step(model, batch, args, record: dict, built: float, tracker, rules, autocast):
    """Forward + loss + backward; fills ``record``; returns the step's end time and a one-line summary."""
    record["gt"] = args.gt
    model.train()
    torch.manual_seed(0)
    with tracker or contextlib.nullcontext(), rules or contextlib.nullcontext():
        with autocast:
            losses = model(batch)
            total = sum(losses.values())
        _sync(args.device)
        forward = time.perf_counter()
        if tracker is not None:  # what the graph holds for backward (and the losses)
            record["live_tensor_after_forward_gib"] = round(tracker.current_bytes / 2**30, 3)
        total.backward()
        _sync(args.device)
        step = time.perf_counter()
    loss_total = float(total.detach())
    record.update(forward_s=round(forward - built, 2), backward_s=round(step - forward, 2),
                  loss_total=round(loss_total, 3))
    if args.save_step:
        torch.save({"losses": {name: loss.detach().float().cpu() for name, loss in losses.items()},
                    "grads": {name: p.grad.float().cpu() for name, p in model.named_parameters()
                              if p.grad is not None}}, args.save_step)
    return step, (f"forward+loss {forward - built:.1f} s, backward {step - forward:.1f} s, "
                  f"{len(losses)} weighted terms, total {loss_total:.2f}")


def main():
    args = _parse_args()
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    model = _build_model(args)
    batch = _inputs(args.batch, args.size, args.width, with_instances=args.mode == "train", num_instances=args.gt)
    device_type = torch.device(args.device).type
    autocast = (torch.autocast(device_type, dtype=_AUTOCAST_DTYPES[args.dtype]) if _AUTOCAST_DTYPES[args.dtype]
                else contextlib.nullcontext())
    # around the whole step: backward's recomputations re-enter the forward's autocast, and must see the same rules
    rules = CudaAutocastFloat32Rules() if args.cuda_autocast_rules else None
    if device_type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    # the model's tensors are part of what an allocator peak counts; the input image is not (a host tensor)
    tracker = (LiveTensorMemory(itertools.chain(model.parameters(), model.buffers())) if args.track_memory
               else None)
    _sync(args.device)
    # Imported libraries, model and input: memory the step neither causes nor can save (about 1 GiB on CPU).
    before_step_gib = _resident_gib()
    built = time.perf_counter()
    record = {"mode": args.mode, "size": args.size, "width": args.width, "batch": args.batch, "dtype": args.dtype,
              "threads": args.threads, "device": args.device, "dn_noise": not args.no_dn_noise,
              "activation_checkpoint": args.activation_checkpoint,
              "deform_recompute": not args.no_deform_recompute, "ffn_recompute": not args.no_ffn_recompute,
              "build_s": round(built - start, 2), "track_memory": args.track_memory,
              "cuda_autocast_rules": args.cuda_autocast_rules}
    if args.mode == "eval":
        model.eval()
        with torch.no_grad(), tracker or contextlib.nullcontext(), rules or contextlib.nullcontext(), autocast:
            results = model(batch)
        _sync(args.device)
        step = time.perf_counter()
        detail = f"{len(results[0]['instances'])} detections"
    else:
        step, detail = _train_step(model, batch, args, record, built, tracker, rules, autocast)
    _report(args, record, start, built, step, before_step_gib, detail, device_type, rules, tracker)


def _report(args, record: dict, start: float, built: float, step: float, before_step_gib: float, detail: str,
            device_type: str, rules, tracker):
    """Print the one-line summary and the JSON record of the case."""
    peak_gib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    # The step's own peak: what a CUDA allocator peak would count (activations, gradients), without the libraries.
    record.update(step_s=round(step - built, 2), peak_rss_gib=round(peak_gib, 3),
                  rss_before_step_gib=round(before_step_gib, 3), step_peak_gib=round(peak_gib - before_step_gib, 3))
    if device_type == "cuda":
        # allocated: what the tensors took at the peak; reserved: what the caching allocator held from the GPU
        record["cuda_peak_alloc_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 3)
        record["cuda_peak_reserved_gib"] = round(torch.cuda.max_memory_reserved() / 2**30, 3)
        record["cuda_device"] = torch.cuda.get_device_name()
    if rules is not None:
        record["cuda_rules_upcast_calls"] = rules.calls_upcast
    if tracker is not None:
        record["live_tensor_peak_gib"] = round(tracker.peak_bytes / 2**30, 3)
    print(f"mode={args.mode} size={args.size}x{args.width} batch={args.batch} dtype={args.dtype} "
          f"threads={args.threads}: build {built - start:.1f} s, step {step - built:.1f} s ({detail}), "
          f"peak RSS {peak_gib:.2f} GiB ({peak_gib - before_step_gib:.2f} GiB above the "
          f"{before_step_gib:.2f} GiB before the step)")
    print(json.dumps(record))


if __name__ == "__main__":
    main()
