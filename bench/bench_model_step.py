#!/usr/bin/env python
"""Time one ESTS step on CPU: an eval forward (+ post-processing) or a train forward + loss + backward.

Full TT fine-tune configuration (ResNet-50, 5 levels, 6+6 layers), random official-style initial weights,
one 3x640x640 image (training: 2 text instances, so 50 DN groups = 300 decoder instances). Run one case per
process and measure the whole process with ``/usr/bin/time -v`` for the peak RSS, as spec section 11 does:

    /usr/bin/time -v python bench/bench_model_step.py --mode eval  --threads 2
    /usr/bin/time -v python bench/bench_model_step.py --mode train --threads 2
"""
import argparse
import resource
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _cfg():
    from detectron2.config import get_cfg

    from ests_d2.config import add_ests_config

    cfg = get_cfg()
    add_ests_config(cfg)
    cfg.MODEL.META_ARCHITECTURE = "ESTS"
    cfg.MODEL.BACKBONE.NAME = "build_resnet_backbone"
    cfg.MODEL.BACKBONE.FREEZE_AT = 2
    cfg.MODEL.RESNETS.DEPTH = 50
    cfg.MODEL.RESNETS.STRIDE_IN_1X1 = False
    cfg.MODEL.RESNETS.NORM = "FrozenBN"
    cfg.MODEL.RESNETS.OUT_FEATURES = ["res2", "res3", "res4", "res5"]
    cfg.MODEL.PIXEL_MEAN = [123.675, 116.28, 103.53]
    cfg.MODEL.PIXEL_STD = [58.395, 57.12, 57.375]
    cfg.INPUT.FORMAT = "RGB"
    cfg.MODEL.DEVICE = "cpu"
    return cfg


def _input(size: int, with_instances: bool):
    from detectron2.structures import Boxes, Instances

    from ests_d2.data.text_utils import CharVocabulary

    gen = torch.Generator().manual_seed(0)
    item = {"image": torch.randint(0, 256, (3, size, size), dtype=torch.uint8, generator=gen),
            "height": size, "width": size, "image_id": 0}
    if with_instances:
        vocab = CharVocabulary.from_config(97)
        boxes = torch.tensor([[100.0, 120.0, 300.0, 180.0], [350.0, 400.0, 520.0, 470.0]])
        beziers = []
        for x0, y0, x1, y1 in boxes.tolist():
            top = torch.linspace(x0, x1, 4)
            beziers.append(torch.stack([torch.cat([top, top.flip(0)]), torch.tensor([y0] * 4 + [y1] * 4)], 1).flatten())
        instances = Instances((size, size))
        instances.gt_boxes = Boxes(boxes)
        instances.gt_classes = torch.zeros(2, dtype=torch.int64)
        instances.gt_beziers = torch.stack(beziers)
        instances.gt_rec = torch.tensor([vocab.encode("TOAST", 25), vocab.encode("crocs", 25)])
        item["instances"] = instances
    return item


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mode", choices=["eval", "train"], required=True)
    parser.add_argument("--size", type=int, default=640)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from detectron2.modeling import build_model

    import ests_d2.modeling  # noqa: F401

    start = time.perf_counter()
    torch.manual_seed(0)
    model = build_model(_cfg())
    built = time.perf_counter()
    batch = [_input(args.size, with_instances=args.mode == "train")]
    if args.mode == "eval":
        model.eval()
        with torch.no_grad():
            results = model(batch)
        step = time.perf_counter()
        detail = f"{len(results[0]['instances'])} detections"
    else:
        model.train()
        torch.manual_seed(0)
        losses = model(batch)
        forward = time.perf_counter()
        total = sum(losses.values())
        total.backward()
        step = time.perf_counter()
        detail = (f"forward+loss {forward - built:.1f} s, backward {step - forward:.1f} s, "
                  f"{len(losses)} weighted terms, total {float(total):.2f}")
    peak_gib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(f"mode={args.mode} size={args.size} threads={args.threads}: build {built - start:.1f} s, "
          f"step {step - built:.1f} s ({detail}), peak RSS {peak_gib:.2f} GiB")


if __name__ == "__main__":
    main()
