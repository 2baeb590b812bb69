"""The tiny ESTS exported once and run in ONNX Runtime on the CPU: the graph's outputs against PyTorch on the
golden images and a real image at two test sizes (issue #22: max abs diff <= 1e-3, identical selections)."""
import numpy as np
import pytest
import torch

from ests_d2.export.network import OUTPUT_NAMES
from tests.export.tiny_export import REAL_IMAGE
from tests.shared_paths import load_golden

NEEDS_EXTRA = "the ONNX tests need the export extra: pip install -e .[export]"
onnx = pytest.importorskip("onnx", reason=NEEDS_EXTRA)
onnxruntime = pytest.importorskip("onnxruntime", reason=NEEDS_EXTRA)

TOLERANCE = 1e-3


@pytest.fixture(scope="module")
def session(tiny_onnx):
    return onnxruntime.InferenceSession(str(tiny_onnx["onnx"]), providers=["CPUExecutionProvider"])


def test_graph_is_valid_onnx_with_dynamic_height_and_width(tiny_onnx):
    model = onnx.load(str(tiny_onnx["onnx"]))
    onnx.checker.check_model(model)
    (image,) = model.graph.input
    dims = [d.dim_param or d.dim_value for d in image.type.tensor_type.shape.dim]
    assert dims == [1, 3, "height", "width"]
    assert [o.name for o in model.graph.output] == list(OUTPUT_NAMES)
    ops = {node.op_type for node in model.graph.node}
    assert {"GridSample", "RoiAlign", "TopK"} <= ops


def _real_image_inputs(sizes):
    """The real photo resized as the test-time resize does (short side -> size), normalised like ESTS."""
    from PIL import Image

    from ests_d2.export.runtime import resize_shortest_edge_shape

    photo = Image.open(REAL_IMAGE).convert("RGB")
    mean = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)
    for short in sizes:
        height, width = resize_shortest_edge_shape(photo.height, photo.width, short, 10_000)
        pixels = torch.from_numpy(np.asarray(photo.resize((width, height), Image.BILINEAR)).copy())
        yield (pixels.permute(2, 0, 1).float() / 255 - mean) / std


def _compare(model, session, image: torch.Tensor):
    with torch.no_grad():
        eager = model.official_forward([image])
    got = dict(zip(OUTPUT_NAMES, session.run(None, {"image": image[None].numpy()})))
    np.testing.assert_array_equal(got["topk_index"], eager["topk_index"].numpy())  # the selected encoder tokens
    for name in OUTPUT_NAMES[:4]:
        diff = np.abs(got[name] - eager[name].numpy()).max()
        assert diff <= TOLERANCE, f"{name}: max abs diff {diff:.3g} at input {tuple(image.shape)}"
    # the post-processing selects the same (query, class) pairs and decodes the same texts
    logits = torch.from_numpy(got["pred_logits"])
    order_onnx = torch.topk(logits.sigmoid().flatten(1), 20).indices
    order_eager = torch.topk(eager["pred_logits"].sigmoid().flatten(1), 20).indices
    assert torch.equal(order_onnx, order_eager)
    assert np.array_equal(got["pred_rec"].argmax(-1), eager["pred_rec"].argmax(-1).numpy())


def test_onnx_matches_pytorch_on_the_golden_images(tiny_onnx, session):
    for image in load_golden("inputs.pth")["images"]:  # 320 x 416 and 384 x 352
        _compare(tiny_onnx["model"], session, image)


def test_onnx_matches_pytorch_on_a_real_image_at_two_sizes(tiny_onnx, session):
    images = list(_real_image_inputs((160, 256)))
    assert images[0].shape[1:] != images[1].shape[1:]
    for image in images:
        _compare(tiny_onnx["model"], session, image)


def test_fill_diagonal_translation_matches_pytorch(tmp_path):
    from ests_d2.export.onnx_export import OPSET
    from ests_d2.export.symbolics import register_symbolics

    class Masked(torch.nn.Module):
        def forward(self, x):
            mask = torch.full((x.shape[0], x.shape[0]), 0.0)
            mask.fill_diagonal_(float("-inf"))
            return x + mask

    register_symbolics(OPSET)
    path = tmp_path / "fill.onnx"
    torch.onnx.export(Masked(), (torch.randn(4, 4),), str(path), dynamo=False, opset_version=OPSET,
                      input_names=["x"], dynamic_axes={"x": {0: "n", 1: "n"}})
    run = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for n in (4, 7):
        x = torch.randn(n, n)
        np.testing.assert_array_equal(run.run(None, {"x": x.numpy()})[0], Masked()(x).numpy())
