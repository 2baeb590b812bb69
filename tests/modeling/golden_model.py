"""The official TT fine-tune model with the golden recipe weights, passed through our converter."""
import torch
from detectron2.modeling import build_model

import ests_d2.modeling  # noqa: F401  (registers the meta-architecture)
from ests_d2.modeling.official_checkpoint import check_against_model, convert_official_state_dict
from tests.modeling.golden_weights import official_recipe_state_dict
from tests.modeling.model_config import ests_cfg
from tests.shared_paths import require_shared

# README "Observed tolerances": a faithful float32 CPU re-implementation agrees within these everywhere
GOLDEN_RTOL, GOLDEN_ATOL = 1e-5, 2e-4


def golden_model():
    """(model, conversion report) with the recipe weights loaded strictly; skips when /work/shared is absent."""
    tsv = require_shared("docs/state_dict_tt_finetune.tsv")
    torch.manual_seed(0)
    model = build_model(ests_cfg())
    converted, report = convert_official_state_dict(official_recipe_state_dict(tsv))
    problems = check_against_model(converted, model.state_dict())
    assert not problems, problems
    model.load_state_dict(converted, strict=True)
    return model, report


def assert_close(mine: torch.Tensor, ref: torch.Tensor, what: str, atol: float = GOLDEN_ATOL):
    assert mine.shape == ref.shape, f"{what}: shape {tuple(mine.shape)} vs golden {tuple(ref.shape)}"
    diff = (mine.double() - ref.double()).abs().max().item()
    assert torch.allclose(mine.double(), ref.double(), rtol=GOLDEN_RTOL, atol=atol), f"{what}: max abs diff {diff:.3g}"
