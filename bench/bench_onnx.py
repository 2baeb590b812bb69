#!/usr/bin/env python
"""Eager PyTorch against ONNX Runtime inference of the full TT model, side by side, one fresh process per case.

Every case is ``BACKEND SIZE THREADS`` (BACKEND eager|eager-int8|onnx|int8, SIZE the side of a square random
normalised image; int8 is the opt-in reduced-precision model ``export_model.py --quantize int8`` writes, made from
``--onnx`` if absent; eager-int8 the PyTorch model with ``export.quantize.quantize_linears``);
a case times (wall and process CPU seconds) network + post-processing (``ESTS.official_forward`` + ``ESTSPostProcess`` against
``OnnxTextSpotter.run_network`` + ``postprocess``), ``--repeats`` times after ``--warmup`` runs, and reports the
fastest run and the process's peak RSS (``VmHWM``: model loading included). The ONNX worker imports neither
torch nor detectron2, as a deployment would not. Weights are random (seeded): speed and memory do not depend
on their values. Records are JSON lines on stdout and appended to ``--out``.

    python bench/bench_onnx.py --onnx output/bench/tt.onnx --out output/bench/onnx.jsonl \\
        --case "eager 640 1" --case "onnx 640 1" --case "int8 640 1"
    python bench/bench_onnx.py --onnx output/bench/tt.onnx --profile 320   # where ONNX Runtime spends its time
"""
import argparse
import collections
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "configs" / "ESTS" / "TotalText.yaml"
DEFAULT_CASES = ["eager 640 1", "eager-int8 640 1", "onnx 640 1", "int8 640 1",
                 "eager 640 2", "eager-int8 640 2", "onnx 640 2", "int8 640 2",
                 "eager 1024 1", "eager-int8 1024 1", "onnx 1024 1", "int8 1024 1",
                 "eager 1024 2", "eager-int8 1024 2", "onnx 1024 2", "int8 1024 2"]


def _full_model():
    import torch
    from detectron2.modeling import build_model

    import ests_d2.modeling  # noqa: F401  (registers the meta-architecture)
    from ests_d2.config import load_ests_config

    cfg = load_ests_config(str(CONFIG), ["MODEL.DEVICE", "cpu"])
    torch.manual_seed(0)
    return cfg, build_model(cfg).eval()


def export(onnx_path: Path):
    from ests_d2.export.onnx_export import export_onnx

    cfg, model = _full_model()
    export_onnx(model, cfg, onnx_path)


def int8_path(onnx_path: Path) -> Path:
    """Where ``tools/export_model.py --quantize int8`` puts the int8 version of ``onnx_path``."""
    return onnx_path.with_suffix(".int8.onnx")


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _timed(run, repeats: int, warmup: int):
    """Wall and CPU seconds of every timed run. On a shared machine the CPU time is the steadier number: with
    one thread it is what the wall time would be on an idle core."""
    for _ in range(warmup):
        run()
    times, cpu = [], []
    for _ in range(repeats):
        start, start_cpu = time.perf_counter(), _cpu_seconds()
        run()
        times.append(time.perf_counter() - start)
        cpu.append(_cpu_seconds() - start_cpu)
    return times, cpu


def ort_profile(onnx_path: Path, size: int, threads: int, top: int = 8) -> dict:
    """Share of ONNX Runtime's kernel time per operator type, for one run at ``size``: what limits the speed."""
    import numpy as np
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.enable_profiling, options.intra_op_num_threads = True, threads
    options.profile_file_prefix = str(onnx_path.with_suffix("")) + "_profile"
    session = onnxruntime.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
    session.run(None, {"image": np.random.default_rng(0).standard_normal((1, 3, size, size), dtype=np.float32)})
    return {"profile_model": onnx_path.name, "profile_size": size,
            **profile_shares(json.loads(Path(session.end_profiling()).read_text()), top)}


def profile_shares(events, top: int = 8) -> dict:
    """Kernel seconds and their shares per operator type and per part of the model, of an ORT profile."""
    per_op, per_module = collections.Counter(), collections.Counter()
    for event in events:
        if event.get("cat") == "Node" and event["name"].endswith("_kernel_time"):
            per_op[event["args"]["op_name"]] += event["dur"]
            per_module[_module_of(event["name"][: -len("_kernel_time")])] += event["dur"]
    total = sum(per_op.values())
    return {"kernel_s": round(total / 1e6, 1), "share": {op: round(d / total, 3) for op, d in per_op.most_common(top)},
            "module_share": {m: round(d / total, 3) for m, d in per_module.most_common()}}


def _module_of(node_name: str) -> str:
    """Part of the model an ONNX node belongs to, from its scope name (fused nodes: ``fused /scope/...``).

    ``/layers.N/...`` are the encoder's layers (``ExportableESTS`` runs them itself): ``self_attn/<op>`` is the
    deformable sampling and its arithmetic, ``self_attn/<linear>/<op>`` its projections."""
    parts = [p for p in node_name.split(" ")[-1].split("/") if p]
    if parts[0].startswith("layers."):
        if len(parts) == 2:
            return "encoder/residual adds, ReLU"
        if parts[1] == "self_attn":
            return "encoder/sampling" if len(parts) == 3 else "encoder/attention projections"
        return "encoder/" + parts[1]
    if parts[0] in ("backbone", "decoder") or parts[0].startswith("input_proj"):
        return parts[0].split(".")[0]
    return "other (proposals, RoI, position encodings)"


def worker(backend: str, size: int, threads: int, onnx_path: Path, repeats: int, warmup: int) -> dict:
    import numpy as np

    rng = np.random.default_rng(0)
    image = rng.standard_normal((1, 3, size, size), dtype=np.float32)
    start = time.perf_counter()
    if backend in ("onnx", "int8"):
        from ests_d2.export.runtime import OnnxTextSpotter

        spotter = OnnxTextSpotter(onnx_path if backend == "onnx" else int8_path(onnx_path), num_threads=threads)
        run = lambda: spotter.postprocess(spotter.run_network(image), (size, size))  # noqa: E731
    else:
        import torch

        torch.set_num_threads(threads)
        _, model = _full_model()
        if backend == "eager-int8":
            from ests_d2.export.quantize import quantize_linears

            model = quantize_linears(model)
        tensor = torch.from_numpy(image[0])
        sizes = torch.tensor([[size, size]])

        def run():
            with torch.no_grad():
                return model.postprocess(model.official_forward([tensor]), sizes)
    load_s = time.perf_counter() - start
    times, cpu = _timed(run, repeats, warmup)
    return {"backend": backend, "size": size, "threads": threads, "load_s": round(load_s, 1),
            "latency_s": round(min(times), 2), "runs_s": [round(t, 2) for t in times],
            "cpu_s": round(min(cpu), 2),
            "peak_rss_gib": round(_peak_rss_kib() / 2**20, 2)}


def _peak_rss_kib() -> int:
    """Peak resident memory of this process: ``VmHWM``. Not ``ru_maxrss``: Linux carries that over fork + exec,
    so a worker would report the parent's peak (the export, 2.8 GiB) whenever that is higher than its own."""
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))


def run_case(spec: str, args) -> dict:
    backend, size, threads = spec.split()
    if backend not in ("eager", "eager-int8", "onnx", "int8"):
        raise ValueError(f"case {spec!r}: expected 'BACKEND SIZE THREADS' with BACKEND eager|eager-int8|onnx|int8")
    with open("/proc/loadavg") as f:
        load = float(f.read().split()[0])
    command = [sys.executable, __file__, "--worker", spec, "--onnx", str(args.onnx), "--repeats", str(args.repeats),
               "--warmup", str(args.warmup)]
    try:
        proc = subprocess.run(command, capture_output=True, text=True, timeout=args.timeout)
    except subprocess.TimeoutExpired:
        return {"case": spec, "error": f"timeout after {args.timeout} s", "load_before": load}
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        tail = proc.stderr.strip().splitlines()[-1:] or [f"rc {proc.returncode}"]
        return {"case": spec, "error": tail[0], "load_before": load}
    return {"case": spec, "load_before": load, **json.loads(lines[-1])}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--onnx", type=Path, required=True, help="exported full model (written first if absent)")
    parser.add_argument("--out", type=Path, help="JSON-lines file the records are appended to")
    parser.add_argument("--case", action="append", default=[], help="BACKEND SIZE THREADS; repeatable "
                        f"(default: {', '.join(DEFAULT_CASES)})")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--warmup", type=int, default=0)
    parser.add_argument("--timeout", type=int, default=1800, help="seconds per case")
    parser.add_argument("--profile", type=int, metavar="SIZE",
                        help="instead of the cases: ONNX Runtime's time per operator type at SIZE x SIZE, 1 thread")
    parser.add_argument("--profile-model", type=Path, help="the ONNX file --profile runs (default: --onnx)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.profile:
        print(json.dumps(ort_profile(args.profile_model or args.onnx, args.profile, threads=1)))
        return
    if args.worker:
        backend, size, threads = args.worker.split()
        print(json.dumps(worker(backend, int(size), int(threads), args.onnx, args.repeats, args.warmup)))
        return
    if not args.onnx.is_file():
        start = time.perf_counter()
        export(args.onnx)
        print(json.dumps({"exported": str(args.onnx), "export_s": round(time.perf_counter() - start, 1)}), flush=True)
    cases = args.case or DEFAULT_CASES
    if any(spec.startswith("int8") for spec in cases) and not int8_path(args.onnx).is_file():
        from ests_d2.export.quantize import quantize_onnx

        quantize_onnx(args.onnx, int8_path(args.onnx))
    for spec in cases:
        record = run_case(spec, args)
        print(json.dumps(record), flush=True)
        if args.out:
            args.out.parent.mkdir(parents=True, exist_ok=True)
            with open(args.out, "a") as f:
                f.write(json.dumps(record) + "\n")


if __name__ == "__main__":
    main()
