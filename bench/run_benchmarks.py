#!/usr/bin/env python
"""Run bench_model_step.py cases one after the other, each in a fresh process under ``/usr/bin/time -v``.

Every case is ``MODE SIZE DTYPE [GT]`` (e.g. ``train 640 bf16 20``); the JSON record of bench_model_step.py plus
the wall time and peak RSS that ``time`` saw for the whole process are appended as one line to --out. Cases run
strictly one at a time (never two heavy processes at once); a case that fails (out of memory, timeout) is
recorded with its return code instead of numbers.

    python bench/run_benchmarks.py --out bench/results.jsonl --case "eval 640 fp32" --case "train 640 fp32 2"
    python bench/run_benchmarks.py --out bench/results.jsonl --plot docs/images/bench_memory_curve.png
"""
import argparse
import json
import re
import subprocess
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent / "bench_model_step.py"


def run_case(spec: str, threads: int, timeout_s: int, extra: list) -> dict:
    parts = spec.split()
    if len(parts) not in (3, 4) or parts[0] not in ("eval", "train") or parts[2] not in ("fp32", "bf16"):
        raise ValueError(f"case {spec!r}: expected 'MODE SIZE DTYPE [GT]' with MODE eval|train, DTYPE fp32|bf16")
    command = ["/usr/bin/time", "-v", sys.executable, str(BENCH), "--mode", parts[0], "--size", parts[1],
               "--dtype", parts[2], "--threads", str(threads)] + (["--gt", parts[3]] if len(parts) == 4 else []) + extra
    with open("/proc/loadavg") as f:
        load_before = float(f.read().split()[0])
    started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    try:
        proc = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        return {"case": spec, "started": started, "error": f"timeout after {timeout_s} s", "load_before": load_before}
    record = {"case": spec, "started": started, "returncode": proc.returncode, "load_before": load_before}
    records = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if records:
        record.update(json.loads(records[-1]))
    rss = re.search(r"Maximum resident set size \(kbytes\): (\d+)", proc.stderr)
    wall = re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): ([\d:.]+)", proc.stderr)
    if rss:
        record["time_v_peak_rss_gib"] = round(int(rss.group(1)) / 2**20, 3)
    if wall:
        seconds = 0.0
        for field in wall.group(1).split(":"):
            seconds = seconds * 60 + float(field)
        record["process_wall_s"] = round(seconds, 1)
    if proc.returncode != 0:
        record["error"] = proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else f"rc {proc.returncode}"
    return record


def plot_memory_curve(records: list, path: Path):
    """Training peak RSS against pixel count, one line per number of text instances (fp32 and bf16)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    series = {}
    for r in records:
        if r.get("mode") == "train" and "time_v_peak_rss_gib" in r and not r.get("error"):
            series.setdefault((r["gt"], r["dtype"]), []).append((r["size"], r["time_v_peak_rss_gib"]))
    for (gt, dtype), points in sorted(series.items()):
        points = sorted(dict(points).items())
        ax.plot([s * s / 1e6 for s, _ in points], [m for _, m in points], "o-", label=f"{gt} text instances, {dtype}")
        for size, mem in points:
            ax.annotate(f"{size}", (size * size / 1e6, mem), textcoords="offset points", xytext=(4, -10), fontsize=7)
    if series:
        lo = min(s for pts in series.values() for s, _ in pts)
        base = min(m for pts in series.values() for s, m in pts if s == lo)
        xs = [lo * lo / 1e6, max(s for pts in series.values() for s, _ in pts) ** 2 / 1e6]
        ax.plot(xs, [base * x / xs[0] for x in xs], "k:", label="proportional to pixels (from smallest)")
    ax.set_xlabel("image pixels (millions, square images; labels = side)")
    ax.set_ylabel("peak RSS of the process (GiB)")
    ax.set_title("ESTS training step (forward + loss + backward), CPU")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="JSON-lines file the records are appended to")
    parser.add_argument("--case", action="append", default=[], help="MODE SIZE DTYPE [GT]; repeatable")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--timeout", type=int, default=1800, help="seconds per case")
    parser.add_argument("--plot", type=Path, help="write the training memory curve of --out to this PNG")
    args, extra = parser.parse_known_args()
    for spec in args.case:
        record = run_case(spec, args.threads, args.timeout, extra)
        with open(args.out, "a") as f:
            f.write(json.dumps(record) + "\n")
        print(json.dumps(record), flush=True)
    if args.plot:
        plot_memory_curve([json.loads(line) for line in args.out.read_text().splitlines() if line.strip()], args.plot)


if __name__ == "__main__":
    main()
