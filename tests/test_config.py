"""Config: every shipped yaml loads on top of add_ests_config, and command-line overrides apply."""
from pathlib import Path

import pytest
from detectron2.config import get_cfg

from ests_d2.config import add_ests_config

REPO = Path(__file__).resolve().parents[1]
CONFIGS = sorted((REPO / "configs").rglob("*.yaml"))


def load(path, opts=()):
    cfg = get_cfg()
    add_ests_config(cfg)
    cfg.merge_from_file(str(path))
    cfg.merge_from_list(list(opts))
    return cfg


def test_add_ests_config_only_adds_keys():
    plain = get_cfg()
    extended = get_cfg()
    add_ests_config(extended)

    def flatten(node, prefix=""):
        out = {}
        for k, v in node.items():
            if hasattr(v, "items"):
                out.update(flatten(v, f"{prefix}{k}."))
            else:
                out[f"{prefix}{k}"] = v
        return out

    before, after = flatten(plain), flatten(extended)
    changed = {k for k in before if after.get(k) != before[k]}
    assert not changed, f"add_ests_config changed detectron2 defaults: {sorted(changed)}"
    assert "MODEL.ESTS.NUM_QUERIES" in after and "MODEL.ESTS.NUM_QUERIES" not in before
    # detectron2's global defaults must stay untouched for the next get_cfg()
    assert "ESTS" not in get_cfg().MODEL


# recognition classes of the non-EN official variants (every other config is EN: 97)
OTHER_SCRIPTS = {"VinText-Finetune.yaml": 107, "Synthetic-Vietnamese-Tiny.yaml": 107, "ReCTS-Pretrain.yaml": 5463,
                 "ReCTS-Finetune.yaml": 5463, "MLT-Pretrain.yaml": 4268, "MLT-Finetune.yaml": 4268}


@pytest.mark.parametrize("path", CONFIGS, ids=[str(p.relative_to(REPO)) for p in CONFIGS])
def test_every_config_loads(path):
    cfg = load(path)
    assert cfg.MODEL.META_ARCHITECTURE == "ESTS"
    assert cfg.MODEL.ESTS.VOC_SIZE == OTHER_SCRIPTS.get(path.name, 97)
    # the official 4-level models (ReCTS, MLT) read res3..res5 and train without denoising
    four_levels = cfg.MODEL.ESTS.NUM_FEATURE_LEVELS == 4 and cfg.MODEL.ESTS.VOC_SIZE in (5463, 4268)
    assert not four_levels or (cfg.MODEL.RESNETS.OUT_FEATURES == ["res3", "res4", "res5"]
                               and not cfg.MODEL.ESTS.DN.ENABLED)


def test_official_values_in_base_config():
    cfg = load(REPO / "configs" / "Base-ESTS.yaml")
    e = cfg.MODEL.ESTS
    assert (e.NUM_QUERIES, e.HIDDEN_DIM, e.NHEADS, e.DIM_FEEDFORWARD) == (100, 256, 8, 2048)
    assert (e.ENC_LAYERS, e.DEC_LAYERS, e.NUM_FEATURE_LEVELS, e.PE_TEMPERATURE) == (6, 6, 5, 20)
    assert (e.DN.NUMBER, e.DN.LABEL_NOISE_RATIO, e.DN.BOX_NOISE_SCALE) == (100, 0.5, 1.0)
    assert tuple(cfg.INPUT.MIN_SIZE_TRAIN) == tuple(range(640, 897, 32))
    assert cfg.INPUT.MAX_SIZE_TRAIN == 1600


def test_command_line_overrides():
    cfg = load(
        REPO / "configs" / "ESTS" / "TotalText.yaml",
        ["SOLVER.IMS_PER_BATCH", "4", "INPUT.MIN_SIZE_TRAIN", "(640, 672)", "MODEL.ESTS.DN.ENABLED", "False"],
    )
    assert cfg.SOLVER.IMS_PER_BATCH == 4
    assert tuple(cfg.INPUT.MIN_SIZE_TRAIN) == (640, 672)
    assert cfg.MODEL.ESTS.DN.ENABLED is False


def test_unknown_key_is_rejected():
    with pytest.raises((KeyError, AssertionError), match="NOT_A_KEY"):
        load(REPO / "configs" / "Base-ESTS.yaml", ["MODEL.ESTS.NOT_A_KEY", "1"])


def test_stage_schedules_match_official_epochs():
    """Iteration counts are the official epochs converted at the official total batch (see yaml comments)."""
    expected = {  # stage: (images, total batch, epochs, LR-drop epochs)
        "TotalText.yaml": (1255, 4, 5, ()),
        "CTW1500.yaml": (1000, 16, 150, (80, 91)),
        "Joint-Train.yaml": (9684, 16, 61, (38, 51)),
        "VinText-Finetune.yaml": (1500, 16, 66, (60,)),
        "ReCTS-Pretrain.yaml": (185603, 16, 12, (8, 10)),
        "ReCTS-Finetune.yaml": (20000, 16, 73, (56, 64)),
        "MLT-Pretrain.yaml": (159684, 16, 17, (12, 14)),
        "MLT-Finetune.yaml": (10000, 16, 101, (85, 93)),
    }
    for name, (images, batch, epochs, drops) in expected.items():
        cfg = load(REPO / "configs" / "ESTS" / name)
        per_epoch = images // batch
        assert cfg.SOLVER.IMS_PER_BATCH == batch, name
        assert cfg.SOLVER.MAX_ITER == per_epoch * epochs, name
        assert tuple(cfg.SOLVER.STEPS) == tuple(d * per_epoch for d in drops), name
        assert cfg.SOLVER.CHECKPOINT_PERIOD == per_epoch, name
