"""The full official TT model (golden recipe weights) exported and run in ONNX Runtime on the golden images."""
import pytest

from ests_d2.export.onnx_export import compare_with_eager, export_onnx
from tests.modeling.golden_model import golden_model
from tests.modeling.model_config import ests_cfg
from tests.shared_paths import load_golden

pytest.importorskip("onnxruntime", reason="the ONNX tests need the export extra: pip install -e .[export]")


@pytest.mark.slow
def test_full_model_onnx_matches_pytorch_on_the_golden_images(tmp_path):
    images = load_golden("inputs.pth")["images"]  # 320 x 416 and 384 x 352, each run alone (unpadded)
    model, _ = golden_model()
    onnx_path, _ = export_onnx(model.eval(), ests_cfg(), tmp_path / "golden.onnx")
    worst = compare_with_eager(model, onnx_path, images)
    assert worst.pop("topk_index") == 0  # the same 100 encoder tokens selected
    assert all(diff <= 1e-3 for diff in worst.values()), worst
