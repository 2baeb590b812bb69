"""Model configurations built in code for the modeling tests (the official TT fine-tune model, or a tiny one)."""
from pathlib import Path

from detectron2.config import get_cfg

from ests_d2.config import add_ests_config

# The shipped base config is the official model: testing with it also checks that it stays so.
BASE_CONFIG = Path(__file__).resolve().parents[2] / "configs" / "Base-ESTS.yaml"


def ests_cfg(num_levels: int = 5):
    """The official TT fine-tune model (ResNet-50, 5 levels) on CPU, as the golden data was produced."""
    cfg = get_cfg()
    add_ests_config(cfg)
    cfg.merge_from_file(str(BASE_CONFIG))
    if num_levels == 4:
        cfg.MODEL.RESNETS.OUT_FEATURES = ["res3", "res4", "res5"]
    cfg.MODEL.ESTS.NUM_FEATURE_LEVELS = num_levels
    cfg.MODEL.DEVICE = "cpu"
    return cfg


def tiny_ests_cfg():
    """A small model for fast end-to-end tests: ResNet-18 layout, 4 levels, 2+2 layers, narrow FFN."""
    cfg = ests_cfg(num_levels=4)
    cfg.MODEL.RESNETS.DEPTH = 18
    cfg.MODEL.RESNETS.RES2_OUT_CHANNELS = 64
    cfg.MODEL.ESTS.ENC_LAYERS = 2
    cfg.MODEL.ESTS.DEC_LAYERS = 2
    cfg.MODEL.ESTS.DIM_FEEDFORWARD = 256
    cfg.MODEL.ESTS.NUM_QUERIES = 20
    cfg.MODEL.ESTS.NUM_SELECT = 20
    cfg.MODEL.ESTS.DN.NUMBER = 2  # 4 DN groups
    return cfg
