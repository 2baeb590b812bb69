#!/usr/bin/env python
"""Run ESTS on images and write pictures (polygons + recognised text) and one JSON per image.

Examples:
    python tools/demo.py --config-file configs/ESTS/TotalText.yaml --input photos/*.jpg \\
        --output demo_out --opts MODEL.WEIGHTS model.pth MODEL.DEVICE cpu
    python tools/demo.py --onnx model.onnx --input photos/ --output demo_out   # exported model, ONNX Runtime

Texts are drawn with matplotlib's DejaVu Sans (Latin incl. Vietnamese, Greek, Cyrillic); for Chinese and other
scripts it lacks, pass ``--font`` with a TrueType/OpenType font that has them (e.g. NotoSansCJK-Regular.ttc).
"""
import argparse
import glob
import os
import sys

import cv2
import tqdm
from detectron2.data.detection_utils import read_image

from ests_d2.config import load_ests_config
from ests_d2.engine.launch import available_device
from ests_d2.engine.predictor import TextSpotterPredictor, detections_to_instances
from ests_d2.utils.cli import CONFIG_ERRORS, INPUT_ERRORS, run_cli
from ests_d2.utils.visualization import TextPainter, draw_text_instances, instances_to_records, write_prediction_json

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


def expand_inputs(inputs):
    """Image files from a list of files, folders and glob patterns (sorted, de-duplicated)."""
    files = []
    for item in inputs:
        if os.path.isdir(item):
            files += [os.path.join(item, f) for f in sorted(os.listdir(item)) if f.lower().endswith(IMAGE_EXTENSIONS)]
        elif os.path.isfile(item):
            files.append(item)
        else:
            matched = sorted(glob.glob(os.path.expanduser(item)))
            if not matched:
                raise FileNotFoundError(f"--input {item!r} matches no file")
            files += matched
    return list(dict.fromkeys(files))


def build_predictor(args):
    """The PyTorch predictor (--config-file) or the ONNX Runtime spotter (--onnx), both -> {"instances": ...}."""
    if args.onnx:
        if args.quantize:
            raise ValueError("--quantize applies to PyTorch inference (--config-file); an int8 ONNX model is made "
                             "by tools/export_model.py --quantize int8")
        from ests_d2.export.runtime import OnnxTextSpotter

        spotter = OnnxTextSpotter(args.onnx, score_threshold=args.confidence_threshold)
        return lambda image_bgr: {"instances": detections_to_instances(spotter(image_bgr)["instances"])}
    if not args.config_file:
        raise ValueError("give --config-file (PyTorch) or --onnx (exported model)")
    cfg = load_ests_config(args.config_file, args.opts)
    cfg.MODEL.DEVICE = available_device(cfg.MODEL.DEVICE)  # a demo should run anywhere
    cfg.freeze()
    return TextSpotterPredictor(cfg, score_threshold=args.confidence_threshold, quantize=args.quantize)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config-file", help="ESTS config (PyTorch inference)")
    parser.add_argument("--onnx", help="model exported by tools/export_model.py (its .json sidecar beside it)")
    parser.add_argument("--input", nargs="+", required=True, help="image files, folders or glob patterns")
    parser.add_argument("--output", required=True, help="folder for <name>.png and <name>.json")
    parser.add_argument("--confidence-threshold", type=float, default=0.4, help="minimum detection score drawn")
    parser.add_argument("--quantize", choices=["int8"], default="",
                        help="PyTorch on the CPU: int8 matrix products, ~1.8x faster, not the float32 outputs")
    parser.add_argument("--font", default="", help="TrueType font for the texts (default: DejaVu Sans; CJK needs one)")
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error")
    parser.add_argument("--opts", nargs=argparse.REMAINDER, default=[], help="config overrides: KEY VALUE ...")
    args = parser.parse_args()
    return run_cli("demo.py", lambda: run(args), debug=args.debug, user_errors={(*INPUT_ERRORS, *CONFIG_ERRORS): 1})


def run(args):
    try:
        painter = TextPainter(args.font or None)
    except (OSError, RuntimeError) as e:
        raise ValueError(f"--font {args.font}: {e}") from e
    files = expand_inputs(args.input)
    predictor = build_predictor(args)
    os.makedirs(args.output, exist_ok=True)
    for path in tqdm.tqdm(files, desc="demo", unit="img"):
        image_bgr = read_image(path, format="BGR")
        kept = predictor(image_bgr)["instances"]
        stem = os.path.splitext(os.path.basename(path))[0]
        picture = draw_text_instances(image_bgr[:, :, ::-1], kept, painter)
        cv2.imwrite(os.path.join(args.output, stem + ".png"), picture[:, :, ::-1])
        record = {"file_name": path, "height": image_bgr.shape[0], "width": image_bgr.shape[1],
                  "confidence_threshold": args.confidence_threshold, "instances": instances_to_records(kept)}
        write_prediction_json(record, os.path.join(args.output, stem + ".json"))
    print(f"wrote {len(files)} picture(s) and JSON file(s) to {args.output}")


if __name__ == "__main__":
    sys.exit(main())
