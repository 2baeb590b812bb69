"""Each export rewrite (ests_d2/export/ops.py, network.py) against the eager op it replaces."""
import pytest
import torch
from detectron2.modeling import build_model

import ests_d2.modeling  # noqa: F401  (registers the meta-architecture)
from ests_d2.export import network as export_network
from ests_d2.export.network import ExportableESTS, ExportError, check_exportable
from ests_d2.export.ops import ExportDeformAttn, grid_sample_deform_attn, roi_features_for_export
from ests_d2.modeling.encoder import level_grid
from ests_d2.modeling.ms_deform_attn import MSDeformAttn
from ests_d2.modeling.ops import ms_deform_attn_sample
from tests.modeling.model_config import tiny_ests_cfg

SHAPES = [(7, 9), (4, 5), (2, 3)]


def _sampling_inputs(dtype, batch=2, queries=11, heads=4, head_dim=8, points=3):
    torch.manual_seed(0)
    value = torch.randn(batch, sum(h * w for h, w in SHAPES), heads, head_dim, dtype=dtype)
    # beyond [0, 1] too: samples partly or wholly outside a map read zeros
    locations = torch.rand(batch, queries, heads, len(SHAPES), points, 2, dtype=dtype) * 1.4 - 0.2
    weights = torch.rand(batch, queries, heads, len(SHAPES) * points, dtype=dtype).softmax(-1)
    return value, locations, weights.view(batch, queries, heads, len(SHAPES), points)


@pytest.mark.parametrize("dtype, atol", [(torch.float64, 1e-12), (torch.float32, 2e-6)])
def test_grid_sample_sampling_matches_the_canvas_sampling(dtype, atol):
    value, locations, weights = _sampling_inputs(dtype)
    eager = ms_deform_attn_sample(value, SHAPES, locations, weights)
    export = grid_sample_deform_attn(value, SHAPES, locations, weights)
    assert export.shape == eager.shape
    assert torch.allclose(export, eager, rtol=0, atol=atol), (export - eager).abs().max()


@pytest.mark.parametrize("reference_dims", [2, 4])
def test_export_attention_matches_the_module(reference_dims):
    torch.manual_seed(1)
    # float64 throughout (the default samples in float32)
    module = MSDeformAttn(d_model=32, n_levels=len(SHAPES), n_heads=4, n_points=2, sample_in_fp32=False).double().eval()
    with torch.no_grad():  # non-trivial offsets and weights (the initialisation zeroes the weight matrices)
        for p in module.parameters():
            p.normal_(0, 0.3)
    num_tokens = sum(h * w for h, w in SHAPES)
    query = torch.randn(2, 13, 32, dtype=torch.float64)
    reference = torch.rand(2, 13, len(SHAPES), reference_dims, dtype=torch.float64)
    value = torch.randn(2, num_tokens, 32, dtype=torch.float64)
    padding = torch.rand(2, num_tokens) < 0.2
    with torch.no_grad():
        eager = module(query, reference, value, SHAPES, padding)
        export = ExportDeformAttn(module)(query, reference, value, SHAPES, padding)
    assert torch.allclose(export, eager, rtol=0, atol=1e-12), (export - eager).abs().max()


@pytest.fixture(scope="module")
def tiny_model():
    torch.manual_seed(0)
    return build_model(tiny_ests_cfg()).eval()


def test_roi_pooling_on_every_level_equals_the_pooler(tiny_model):
    transformer = tiny_model.transformer
    torch.manual_seed(2)
    feats = [torch.randn(2, 256, 80 // 2**i, 96 // 2**i) for i in range(3)]
    # box sizes from a few pixels to the whole map: every pooler level is used
    centres = torch.rand(2, 30, 2) * 0.8 + 0.1
    sizes = torch.logspace(-2.5, 0, 30).view(1, 30, 1).expand(2, 30, 2)
    anchors = torch.logit(torch.cat([centres, sizes], -1).clamp(1e-4, 1 - 1e-4))
    valid = torch.tensor([[1.0, 1.0], [0.75, 0.875]])
    with torch.no_grad():
        eager, eager_levels = transformer._roi_features(feats, anchors, (80, 96), valid)
        export, export_levels = roi_features_for_export(transformer, feats, anchors, (80, 96), valid)
    assert set(eager_levels.unique().tolist()) == {0, 1, 2}
    assert torch.equal(export_levels, eager_levels)
    assert torch.equal(export, eager)


def test_level_grids_equal_the_official_linspace_grids_bit_for_bit():
    """The eager model and the export share ``level_grid`` (``arange``, which traces with dynamic sizes); the
    official code uses ``linspace(0, n - 1, n)`` and ``linspace(0.5, n - 0.5, n)``: the same float32 bits."""
    for n in range(1, 400):
        rows, cols = level_grid(n, 3, "cpu")
        assert torch.equal(rows[:, 0], torch.linspace(0, n - 1, n, dtype=torch.float32))
        assert torch.equal(rows[:, 0] + 0.5, torch.linspace(0.5, n - 0.5, n, dtype=torch.float32))
        assert torch.equal(cols[0], torch.arange(3, dtype=torch.float32)) and rows.shape == cols.shape == (n, 3)


@pytest.mark.parametrize("size", [(128, 160), (96, 200)])
def test_exportable_network_matches_the_eager_network(tiny_model, size):
    torch.manual_seed(3)
    image = torch.randn(3, *size)
    with torch.no_grad():
        eager = tiny_model.official_forward([image])
        export = ExportableESTS(tiny_model)(image[None])
    assert torch.equal(export[4], eager["topk_index"])
    for name, value in zip(export_network.OUTPUT_NAMES[:4], export[:4]):
        assert torch.allclose(value, eager[name], rtol=0, atol=1e-5), (name, (value - eager[name]).abs().max())


@pytest.mark.parametrize("key, value, named", [
    ("MODEL.RESNETS.DEFORM_ON_PER_STAGE", [False, True, True, True], "MODEL.RESNETS.DEFORM_ON_PER_STAGE"),
    ("TEST.AUG.ENABLED", True, "TEST.AUG.ENABLED"),
    ("MODEL.META_ARCHITECTURE", "GeneralizedRCNN", "MODEL.META_ARCHITECTURE"),
])
def test_options_that_cannot_be_exported_are_named(key, value, named):
    cfg = tiny_ests_cfg()
    cfg.merge_from_list([key, value])
    with pytest.raises(ExportError, match=named.replace(".", r"\.")):
        check_exportable(cfg)
