#!/usr/bin/env python
"""One encoder-FFN product on a quarter of the 34,100 tokens at 640² (8525 x 256 @ 256 x 2048), on one thread,
in each precision the CPU offers: PyTorch float32 (MKL) and bf16 (CPU autocast), ONNX Runtime float32 and int8
(``quantize_dynamic``, as ``tools/export_model.py --quantize int8``). CPU seconds of the fastest of
``--repeats`` runs and GFLOP/s; what bounds the float32 model's speed (docs/EXPORT.md). JSON lines on stdout.

    nice -n 10 python bench/matmul_precision.py
"""
import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

ROWS, IN, OUT = 8525, 256, 2048


def _best_cpu_s(run, repeats: int) -> float:
    run()  # warm-up (weight packing, allocations)
    times = []
    for _ in range(repeats):
        start = time.process_time()
        run()
        times.append(time.process_time() - start)
    return min(times)


def _onnx_linear(weight: torch.Tensor, bias: torch.Tensor, folder: Path) -> Path:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W"], ["xw"]), helper.make_node("Add", ["xw", "B"], ["y"])], "linear",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, IN])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, OUT])],
        [numpy_helper.from_array(weight.T.contiguous().numpy(), "W"), numpy_helper.from_array(bias.numpy(), "B")])
    path = folder / "linear.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    import onnxruntime
    from onnxruntime.quantization import QuantType, quantize_dynamic

    torch.set_num_threads(1)
    torch.manual_seed(0)
    x = torch.randn(ROWS, IN)
    linear = torch.nn.Linear(IN, OUT).eval()
    flop = 2 * ROWS * IN * OUT
    with torch.inference_mode():
        reference = linear(x)
        cases = {"torch float32": lambda: linear(x)}

        def bf16():
            with torch.autocast("cpu", dtype=torch.bfloat16):
                return linear(x)
        cases["torch bf16 autocast"] = bf16
        results = {name: (_best_cpu_s(run, args.repeats), run().float()) for name, run in cases.items()}
    with tempfile.TemporaryDirectory() as folder:
        fp32 = _onnx_linear(linear.weight.detach(), linear.bias.detach(), Path(folder))
        int8 = Path(folder) / "linear.int8.onnx"
        quantize_dynamic(str(fp32), str(int8), weight_type=QuantType.QInt8, per_channel=True)
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = options.inter_op_num_threads = 1
        for name, path in (("onnxruntime float32", fp32), ("onnxruntime int8 dynamic", int8)):
            session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
            run = lambda: session.run(None, {"x": x.numpy()})[0]  # noqa: E731
            results[name] = (_best_cpu_s(run, args.repeats), torch.from_numpy(run()))
    for name, (seconds, out) in results.items():
        print(json.dumps({"product": f"{ROWS}x{IN} @ {IN}x{OUT}", "backend": name, "cpu_s": round(seconds, 4),
                          "gflops": round(flop / seconds / 1e9, 1),
                          "max_abs_diff_vs_fp32": float((out - reference).abs().max())}))


if __name__ == "__main__":
    main()
