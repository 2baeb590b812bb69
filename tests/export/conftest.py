"""Fixtures of the export tests: one tiny model exported once per session."""
import pytest

from tests.export.tiny_export import tiny_model_files


@pytest.fixture(scope="session")
def tiny_onnx(tmp_path_factory):
    """dict with ``config``, ``weights`` (files), ``model`` (eval ESTS), ``onnx`` and ``sidecar`` (paths)."""
    pytest.importorskip("onnxruntime", reason="the ONNX tests need the export extra: pip install -e .[export]")
    from ests_d2.export.onnx_export import export_onnx
    from tests.export.tiny_export import tiny_cfg

    folder = tmp_path_factory.mktemp("tiny_onnx")
    config, weights, model = tiny_model_files(folder)
    onnx_path, sidecar = export_onnx(model, tiny_cfg(str(weights)), folder / "tiny.onnx")
    return {"config": config, "weights": weights, "model": model, "onnx": onnx_path, "sidecar": sidecar}
