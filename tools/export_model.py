#!/usr/bin/env python
"""Export a trained ESTS to ONNX (any image size) plus the json sidecar OnnxTextSpotter needs.

Needs the optional extra: pip install -e .[export]. Contract of the graph in docs/EXPORT.md.

Examples:
    python tools/export_model.py --config-file configs/ESTS/TotalText.yaml --output export/tt.onnx \\
        --opts MODEL.WEIGHTS model_final.pth
    python tools/export_model.py ... --verify datasets/icdar2015_samples/images/img_52.jpg
    python tools/export_model.py ... --quantize int8   # also export/tt.int8.onnx: faster, reduced precision
"""
import argparse
import sys

from ests_d2.utils.cli import CONFIG_ERRORS, INPUT_ERRORS, run_cli


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config-file", required=True)
    p.add_argument("--output", required=True, help="the .onnx file to write (the sidecar goes beside it, .json)")
    p.add_argument("--sample-size", type=int, nargs=2, default=(320, 416), metavar=("H", "W"),
                   help="size of the random image the graph is traced with (any size runs afterwards)")
    p.add_argument("--score-threshold", type=float, default=0.0,
                   help="default minimum detection score of OnnxTextSpotter, stored in the sidecar")
    p.add_argument("--verify", nargs="*", metavar="IMAGE",
                   help="compare ONNX Runtime with PyTorch on these images (resized as at test time), or on a "
                        "random input at two sizes when no image is given")
    p.add_argument("--quantize", choices=["int8"],
                   help="also write the opt-in reduced-precision model beside OUTPUT (model.int8.onnx + .json): "
                        "int8 matrix products, ~1.4x faster on a CPU thread, outputs no longer within 1e-3 of PyTorch "
                        "(docs/EXPORT.md); OUTPUT stays the exact float32 model")
    p.add_argument("--debug", action="store_true", help="show the traceback of an error")
    p.add_argument("--opts", nargs=argparse.REMAINDER, default=[], help="config overrides: KEY VALUE ...")
    return p.parse_args(argv)


def _verification_inputs(spotter, paths):
    import torch
    from detectron2.data.detection_utils import read_image

    if not paths:
        torch.manual_seed(0)
        return [torch.randn(3, 256, 320), torch.randn(3, 320, 224)]
    return [torch.from_numpy(spotter.preprocess(read_image(p, format="BGR"))[0]) for p in paths]


def export(args):
    from detectron2.checkpoint import DetectionCheckpointer
    from detectron2.modeling import build_model

    import ests_d2.modeling  # noqa: F401  (registers the ESTS meta-architecture)
    from ests_d2.config import load_ests_config
    from ests_d2.export.network import check_exportable
    from ests_d2.export.onnx_export import compare_with_eager, export_onnx

    cfg = load_ests_config(args.config_file, args.opts)
    cfg.MODEL.DEVICE = "cpu"
    check_exportable(cfg)
    if not cfg.MODEL.WEIGHTS:
        raise ValueError("MODEL.WEIGHTS is empty: pass the trained weights (--opts MODEL.WEIGHTS model.pth)")
    model = build_model(cfg).eval()
    DetectionCheckpointer(model).load(cfg.MODEL.WEIGHTS)
    onnx_path, sidecar = export_onnx(model, cfg, args.output, tuple(args.sample_size), args.score_threshold)
    print(f"wrote {onnx_path} and {sidecar}")
    exported = {"ONNX Runtime": onnx_path}
    if args.quantize:
        from ests_d2.export.quantize import quantize_onnx

        quantized, quantized_sidecar = quantize_onnx(onnx_path, onnx_path.with_suffix(f".{args.quantize}.onnx"),
                                                     args.quantize)
        print(f"wrote {quantized} and {quantized_sidecar}")
        exported[f"{args.quantize} ONNX Runtime (reduced precision)"] = quantized
    if args.verify is not None:
        from ests_d2.export.runtime import OnnxTextSpotter

        inputs = _verification_inputs(OnnxTextSpotter(onnx_path), args.verify)
        for name, path in exported.items():
            worst = compare_with_eager(model, path, inputs)
            print(f"{name} vs PyTorch, max abs diff: " + ", ".join(f"{k} {v:.3g}" for k, v in worst.items()
                                                                    if k != "topk_index")
                  + f"; selected tokens that differ: {int(worst['topk_index'])}")


def main(argv=None) -> int:
    args = parse_args(argv)
    # ExportError, an option that cannot be exported, is a ValueError
    return run_cli("export_model.py", lambda: export(args), debug=args.debug,
                   user_errors={(*INPUT_ERRORS, *CONFIG_ERRORS): 1})


if __name__ == "__main__":
    sys.exit(main())
