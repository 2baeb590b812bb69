#!/usr/bin/env python
"""Where a training step of the `make demo` model spends its CPU time (docs/DEMO.md).

CPU time (``time.thread_time``, one torch thread) rather than wall time: on a shared machine wall time
grows with the other processes' load, CPU time much less, and it is what an idle machine's wall time
would be. Each step is split into data (mapper + batching, in this process), forward parts (backbone,
encoder, decoder, criterion, timed by module hooks) and the rest (backward, optimizer, the forward outside those modules).

    python bench/demo_step_cost.py --steps 6 [KEY VALUE ...]      # config overrides, e.g. MODEL.ESTS.DN.ENABLED False
"""
import argparse
import json
import sys
import time
from collections import defaultdict
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

DEFAULT_CONFIG = str(Path(__file__).resolve().parents[1] / "configs" / "ESTS" / "Synthetic-Tiny.yaml")


def _time_modules(model, named):
    """Accumulate CPU seconds of each named submodule's forward into the returned dict."""
    spent, started = defaultdict(float), {}
    for label, module in named.items():
        module.register_forward_pre_hook(lambda m, i, label=label: started.__setitem__(label, time.thread_time()))
        module.register_forward_hook(
            lambda m, i, o, label=label: spent.__setitem__(label, spent[label] + time.thread_time() - started[label]))
    return spent


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config-file", default=DEFAULT_CONFIG)
    parser.add_argument("--steps", type=int, default=6, help="timed steps (after 2 untimed warm-up steps)")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides: KEY VALUE ...")
    args = parser.parse_args()
    torch.set_num_threads(1)

    import ests_d2.data  # noqa: F401  (registers the datasets)
    import ests_d2.modeling  # noqa: F401  (registers the ESTS meta-architecture)
    from ests_d2.config import load_ests_config
    from ests_d2.engine import Trainer

    cfg = load_ests_config(args.config_file, ["DATALOADER.NUM_WORKERS", "0", "MODEL.DEVICE", "cpu"] + args.opts)
    torch.manual_seed(0)
    model = Trainer.build_model(cfg)
    model.train()
    optimizer = Trainer.build_optimizer(cfg, model)
    loader = iter(Trainer.build_train_loader(cfg))
    t = model.transformer
    spent = _time_modules(model, {"backbone": model.backbone, "encoder": t.encoder, "decoder": t.decoder,
                                  "criterion": model.criterion})
    totals = defaultdict(float)
    for step in range(args.steps + 2):
        start = time.thread_time()
        batch = next(loader)
        data = time.thread_time() - start
        spent.clear()
        losses = model(batch)
        loss = sum(losses.values())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step >= 2:
            totals["data"] += data
            for k, v in spent.items():
                totals[k] += v
            totals["step"] += time.thread_time() - start
    n = args.steps
    record = {k: round(v / n, 3) for k, v in totals.items()}
    record["backward_and_rest"] = round(record["step"] - record["data"] - sum(
        record.get(k, 0) for k in ("backbone", "encoder", "decoder", "criterion")), 3)
    record.update(overrides=" ".join(args.opts), steps=n, unit="CPU s per step, 1 thread")
    print(json.dumps(record))


if __name__ == "__main__":
    main()
