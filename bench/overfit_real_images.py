#!/usr/bin/env python
"""Training sanity check: a small ESTS overfits a few real ICDAR2015 images.

Trains the Synthetic-Tiny architecture (from scratch, no augmentation) on the shipped
``icdar2015_samples`` images that have legible words, and every ``--eval-every`` iterations prints the
total loss, how many ground-truth words the model finds (IoU > 0.5), how many of those it reads exactly,
the mean normalised edit similarity of what it reads for the found words, and those readings. A model
that learns shows a falling loss and a rising number of correctly read words.

    python bench/overfit_real_images.py --iters 300 --images 2
"""
import argparse
import json
import time

import torch
from rapidfuzz.distance import Levenshtein
from detectron2.data import DatasetCatalog
from detectron2.modeling import build_model
from detectron2.structures import Boxes, pairwise_iou

import ests_d2.data  # noqa: F401  (registers icdar2015_samples)
import ests_d2.modeling  # noqa: F401
from ests_d2.config import load_ests_config
from ests_d2.data import TextSpottingDatasetMapper
from ests_d2.structures import build_vocabulary


def build_cfg(args):
    return load_ests_config("configs/ESTS/Synthetic-Tiny.yaml", [
        "INPUT.TEXT_CROP.ENABLED", "False", "INPUT.ROTATE.ENABLED", "False", "INPUT.COLOR_JITTER.ENABLED", "False",
        "INPUT.MIN_SIZE_TRAIN", f"({args.size},)", "INPUT.MAX_SIZE_TRAIN", str(2 * args.size),
        "INPUT.MIN_SIZE_TEST", str(args.size), "INPUT.MAX_SIZE_TEST", str(2 * args.size),
        "MODEL.ESTS.DN.ENABLED", "True", "MODEL.ESTS.DN.NUMBER", "50",  # as docs/OVERFIT.md (the demo yaml turns DN off)
    ])


def count_read_words(model, batch, vocab, score_threshold):
    """(found, read exactly, total, readings of the found words as (truth, read)) over ``batch``."""
    model.eval()
    with torch.no_grad():
        outputs = model([{"image": d["image"], "height": d["image"].shape[1], "width": d["image"].shape[2]}
                         for d in batch])
    model.train()
    found = read = total = 0
    readings = []
    for data, out in zip(batch, outputs):
        gt = data["instances"]
        pred = out["instances"]
        pred = pred[pred.scores > score_threshold]
        total += len(gt)
        if len(pred) == 0 or len(gt) == 0:
            continue
        iou = pairwise_iou(gt.gt_boxes, Boxes(pred.pred_boxes.tensor))
        best = iou.argmax(dim=1)
        for g in range(len(gt)):
            if iou[g, best[g]] > 0.5:
                found += 1
                truth, text = vocab.decode(gt.gt_rec[g].tolist()), pred.texts[int(best[g])]
                read += text == truth
                readings.append((truth, text))
    return found, read, total, readings


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--iters", type=int, default=300)
    parser.add_argument("--images", type=int, default=2, help="how many of the legible sample images")
    parser.add_argument("--size", type=int, default=320, help="short side of the training images")
    parser.add_argument("--lr", type=float, default=2e-4)
    parser.add_argument("--eval-every", type=int, default=25)
    parser.add_argument("--score-threshold", type=float, default=0.3)
    args = parser.parse_args()
    torch.manual_seed(0)

    cfg = build_cfg(args)
    mapper = TextSpottingDatasetMapper(cfg, is_train=True)
    dicts = [d for d in DatasetCatalog.get("icdar2015_samples")
             if any(not a.get("iscrowd", 0) for a in d["annotations"])][: args.images]
    batch = [mapper(d) for d in dicts]
    vocab = build_vocabulary(cfg)
    print("images:", [d["file_name"].split("/")[-1] for d in dicts], "sizes:", [tuple(b["image"].shape[1:]) for b in batch])
    print("words:", [vocab.decode(r.tolist()) for b in batch for r in b["instances"].gt_rec])

    model = build_model(cfg)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=1e-4)
    start = time.time()
    history = []
    for it in range(1, args.iters + 1):
        losses = model(batch)
        total = sum(losses.values())
        optimizer.zero_grad()
        total.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 0.1)
        optimizer.step()
        if it % args.eval_every == 0 or it == 1:
            found, read, n, readings = count_read_words(model, batch, vocab, args.score_threshold)
            similarity = sum(Levenshtein.normalized_similarity(t, r) for t, r in readings) / max(len(readings), 1)
            row = {"iter": it, "total_loss": round(total.item(), 3), "loss_rec": round(losses["loss_rec"].item(), 3),
                   "found": found, "read": read, "words": n, "char_similarity": round(similarity, 3),
                   "readings": [r for _, r in readings], "seconds": round(time.time() - start, 1)}
            history.append(row)
            print(json.dumps(row), flush=True)
    print("first/last total loss:", history[0]["total_loss"], history[-1]["total_loss"])


if __name__ == "__main__":
    main()
