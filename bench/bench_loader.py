"""Train-loader throughput: images per second out of detectron2's train loader with the ESTS mapper.

Runs the real pipeline (``build_detection_train_loader`` + ``TextSpottingDatasetMapper``, official
augmentations, aspect-ratio grouping) and times ``--iters`` batches after ``--warmup`` batches (worker
start-up excluded). The input settings of configs/Base-ESTS.yaml by default (the official sizes: short side
640..896, max 1600).

    python bench/bench_loader.py                                  # synthetic_text_train, 2 workers
    python bench/bench_loader.py --dataset icdar2015_samples --min-sizes 640 672 704 736 768 800 832 864 896
"""
import argparse
import json
import os
import platform
import time
from pathlib import Path

import torch
from detectron2.data import build_detection_train_loader

import ests_d2.data  # noqa: F401  (registers the datasets)
from ests_d2.config import load_ests_config
from ests_d2.data import TextSpottingDatasetMapper

BASE_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "Base-ESTS.yaml"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="synthetic_text_train")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch", type=int, default=2, help="images per batch")
    parser.add_argument("--iters", type=int, default=100, help="timed batches")
    parser.add_argument("--warmup", type=int, default=10, help="untimed batches (worker start-up)")
    parser.add_argument("--min-sizes", type=int, nargs="+", help="INPUT.MIN_SIZE_TRAIN (default: the base config's)")
    parser.add_argument("--max-size", type=int, help="INPUT.MAX_SIZE_TRAIN (default: the base config's)")
    args = parser.parse_args()

    cfg = load_ests_config(str(BASE_CONFIG))
    if args.min_sizes:
        cfg.INPUT.MIN_SIZE_TRAIN = tuple(args.min_sizes)
    if args.max_size:
        cfg.INPUT.MAX_SIZE_TRAIN = args.max_size
    cfg.DATASETS.TRAIN = (args.dataset,)
    cfg.DATALOADER.NUM_WORKERS = args.workers
    cfg.SOLVER.IMS_PER_BATCH = args.batch
    loader = build_detection_train_loader(cfg, mapper=TextSpottingDatasetMapper(cfg, is_train=True))

    it = iter(loader)
    for _ in range(args.warmup):
        next(it)
    start = time.perf_counter()
    pixels = 0
    for _ in range(args.iters):
        pixels += sum(x["image"].shape[1] * x["image"].shape[2] for x in next(it))
    elapsed = time.perf_counter() - start
    images = args.iters * args.batch
    print(json.dumps({
        "dataset": args.dataset, "workers": args.workers, "batch": args.batch, "images": images,
        "seconds": round(elapsed, 3), "images_per_s": round(images / elapsed, 2),
        "mean_megapixels": round(pixels / images / 1e6, 3),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch threads "
                   f"{torch.get_num_threads()}",
    }))


if __name__ == "__main__":
    main()
