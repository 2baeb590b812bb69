#!/usr/bin/env python
"""How far the int8 model (``tools/export_model.py --quantize int8``) is from the float32 export, per image.

Both files run in ONNX Runtime on the same inputs: the golden images (``../shared/golden/inputs.pth``, already
normalised) and real photos (``../shared/data/scene_text/images``, resized and normalised by
``OnnxTextSpotter.preprocess``, to ``--short-side`` if given). Per image it reports how many of the Nq selected
encoder tokens agree, the max abs difference of every output on the queries of the tokens both selected, and
for the detections after post-processing (the top ``--top`` by score): how many are the same (token, class)
pairs, their largest score and box differences, and how many of the common ones decode to the same text. One
JSON line per image, a summary last.

    python bench/int8_accuracy.py --onnx output/bench/tt.onnx --int8 output/bench/tt.int8.onnx --images 8
"""
import argparse
import json
import sys
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
OUTPUTS = ("pred_logits", "pred_boxes", "pred_beziers", "pred_rec")


def golden_inputs():
    import torch

    images = torch.load(SHARED / "golden" / "inputs.pth", weights_only=True)["images"]
    return [(f"golden/{i}", image[None].numpy(), tuple(image.shape[-2:])) for i, image in enumerate(images)]


def real_inputs(spotter, count: int, short_side):
    paths = sorted((SHARED / "data" / "scene_text" / "images").rglob("*.jpg"))
    # spread over the subsets (the list is sorted by subset): every len/count-th photo
    picked = paths[:: max(1, len(paths) // count)][:count] if count else []
    if short_side:
        spotter.min_size_test = short_side
    inputs = []
    for path in picked:
        bgr = np.asarray(Image.open(path).convert("RGB"))[:, :, ::-1]
        inputs.append((str(path.relative_to(SHARED)), spotter.preprocess(bgr), bgr.shape[:2]))
    return inputs


def compare(fp32, int8, outputs_fp32, outputs_int8, image_size, top: int) -> dict:
    """Queries are matched by the encoder token they were selected from (a different selection shifts the
    query order), detections by (token, class)."""
    tokens32, tokens8 = outputs_fp32["topk_index"][0], outputs_int8["topk_index"][0]
    common_tokens, q32, q8 = np.intersect1d(tokens32, tokens8, return_indices=True)
    record = {"same_tokens": f"{len(common_tokens)}/{len(tokens32)}"}
    record.update({f"max_abs_{k}": float(np.abs(outputs_fp32[k][0][q32] - outputs_int8[k][0][q8]).max())
                   for k in OUTPUTS})
    det32, det8 = (s.postprocess(o, image_size)[:top] for s, o in ((fp32, outputs_fp32), (int8, outputs_int8)))
    keys32 = {(int(tokens32[q]), int(c)): i for i, (q, c) in enumerate(zip(det32.query_index, det32.pred_classes))}
    keys8 = {(int(tokens8[q]), int(c)): i for i, (q, c) in enumerate(zip(det8.query_index, det8.pred_classes))}
    common = sorted(set(keys32) & set(keys8))
    i32, i8 = [keys32[k] for k in common], [keys8[k] for k in common]
    record[f"same_top{top}"] = f"{len(common)}/{len(det32)}"
    if common:
        record["max_abs_score"] = float(np.abs(det32.scores[i32] - det8.scores[i8]).max())
        record["max_abs_box_px"] = float(np.abs(det32.pred_boxes[i32] - det8.pred_boxes[i8]).max())
        same_text = sum(det32.texts[a] == det8.texts[b] for a, b in zip(i32, i8))
        record["same_text"] = f"{same_text}/{len(common)}"
        record["same_chars"] = round(float((det32.rec[i32] == det8.rec[i8]).mean()), 4)
    return record


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--onnx", type=Path, required=True, help="the float32 export")
    parser.add_argument("--int8", type=Path, required=True, help="its int8 version (written first if absent)")
    parser.add_argument("--images", type=int, default=8, help="real photos to compare on (0: golden images only)")
    parser.add_argument("--short-side", type=int, help="test size of the photos (default: the sidecar's)")
    parser.add_argument("--no-golden", action="store_true", help="skip the golden images (another model size)")
    parser.add_argument("--top", type=int, default=20, help="detections compared after post-processing")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, help="JSON-lines file the records are appended to")
    args = parser.parse_args()
    sys.path.insert(0, str(REPO))
    from ests_d2.export.runtime import OnnxTextSpotter

    if not args.int8.is_file():
        from ests_d2.export.quantize import quantize_onnx

        quantize_onnx(args.onnx, args.int8)
    fp32 = OnnxTextSpotter(args.onnx, num_threads=args.threads)
    int8 = OnnxTextSpotter(args.int8, num_threads=args.threads)
    inputs = ([] if args.no_golden else golden_inputs()) + real_inputs(fp32, args.images, args.short_side)
    records = []
    for name, network_input, image_size in inputs:
        record = {"image": name, "input_hw": list(network_input.shape[-2:]),
                  **compare(fp32, int8, fp32.run_network(network_input), int8.run_network(network_input),
                            image_size, args.top)}
        records.append(record)
        print(json.dumps(record), flush=True)
    # worst and median image of every max-abs difference
    worst = {k: max(r[k] for r in records if k in r) for k in records[0] if k.startswith("max_abs_")}
    median = {k.replace("max_abs_", "median_max_abs_"): float(np.median([r[k] for r in records if k in r]))
              for k in worst}
    summary = {"summary": str(args.int8), "images": len(records), **worst, **median,
               "same_text_total": _total(records, "same_text"), f"same_top{args.top}_total":
               _total(records, f"same_top{args.top}"), "same_tokens_total": _total(records, "same_tokens")}
    print(json.dumps(summary), flush=True)
    if args.out:
        with open(args.out, "a") as f:
            f.writelines(json.dumps(r) + "\n" for r in records + [summary])


def _total(records, key) -> str:
    pairs = [tuple(map(int, r[key].split("/"))) for r in records if key in r]
    return f"{sum(a for a, _ in pairs)}/{sum(b for _, b in pairs)}"


if __name__ == "__main__":
    main()
