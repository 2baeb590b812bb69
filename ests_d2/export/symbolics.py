"""ONNX translations of the ATen ops ESTS uses that the TorchScript ONNX exporter does not know.

Registered by ``register_symbolics`` for the duration of an export (``onnx_export.export_onnx`` calls it), so
the model code stays as it is. ``tests/export/test_symbolics.py`` checks each against PyTorch.
"""
import torch
from torch.onnx import register_custom_op_symbolic, symbolic_helper

__all__ = ["register_symbolics"]

_ONNX_BOOL = 9  # TensorProto.BOOL


@symbolic_helper.parse_args("v", "f", "b")
def _fill_diagonal(g, matrix, fill_value, wrap):
    """``fill_diagonal_`` of a 2-D matrix (the decoder's VLC mask): where(EyeLike(matrix), fill, matrix)."""
    if wrap:
        raise symbolic_helper.errors.SymbolicValueError("fill_diagonal_(wrap=True) is not exported", matrix)
    diagonal = g.op("Cast", g.op("EyeLike", matrix), to_i=_ONNX_BOOL)
    fill = g.op("CastLike", g.op("Constant", value_t=torch.tensor(fill_value, dtype=torch.float32)), matrix)
    return g.op("Where", diagonal, fill, matrix)


def register_symbolics(opset: int) -> None:
    """Make the ops above exportable at ``opset`` (idempotent)."""
    register_custom_op_symbolic("aten::fill_diagonal", _fill_diagonal, opset)
