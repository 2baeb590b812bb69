"""The official ReCTS / VinText / MLT checkpoints: names and shapes derived from the official code, converted
and checked against configs/ESTS/*.yaml (4-level backbone, class counts, denoising)."""
import argparse
import importlib.util
import pickle

import pytest
import torch
from detectron2.modeling import build_model

import ests_d2.modeling  # noqa: F401
from ests_d2.config import load_ests_config
from ests_d2.modeling.official_checkpoint import (
    check_against_model,
    check_official_against_config,
    convert_official_state_dict,
    identify_official_variant,
    official_model_facts,
)
from tests.modeling.official_variants import VARIANTS, official_parameter_count, official_variant_state_dict
from tests.shared_paths import REPO_ROOT, require_shared

CONFIGS = {
    "en": "TotalText.yaml",
    "vintext": "VinText-Finetune.yaml",
    "rects": "ReCTS-Finetune.yaml",
    "mlt": "MLT-Finetune.yaml",
}


def _tsv():
    return require_shared("docs/state_dict_tt_finetune.tsv")


def _code_point_pickle(folder, rec_classes):
    path = folder / f"cls_list_{rec_classes}.txt"
    path.write_bytes(pickle.dumps([0x4E00 + i for i in range(rec_classes - 2)]))
    return str(path)


def _variant_cfg(variant, tmp_path, *opts):
    config = str(REPO_ROOT / "configs" / "ESTS" / CONFIGS[variant])
    cfg = load_ests_config(config, ["MODEL.DEVICE", "cpu", "MODEL.WEIGHTS", ""] + list(opts))
    if cfg.MODEL.ESTS.VOCABULARY == "code_point_pickle":  # the official list is not shipped: one of its size
        cfg.MODEL.ESTS.CUSTOM_DICT = _code_point_pickle(tmp_path, cfg.MODEL.ESTS.VOC_SIZE)
    return cfg


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_derived_shapes_give_the_official_parameter_counts(variant):
    assert official_parameter_count(_tsv(), variant) == VARIANTS[variant][3]


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_each_official_variant_converts_into_its_config(variant, tmp_path):
    levels, rec_classes, use_dn, _ = VARIANTS[variant]
    official = official_variant_state_dict(_tsv(), variant)
    facts = official_model_facts(official)
    assert facts == {"feature_levels": levels, "box_classes": 2, "rec_classes": rec_classes}
    assert identify_official_variant(facts).config.endswith(CONFIGS[variant])
    cfg = _variant_cfg(variant, tmp_path)
    assert check_official_against_config(facts, cfg, argparse.Namespace(use_dn=use_dn)) == []
    converted, report = convert_official_state_dict(official)
    assert report.unmapped == []
    model = build_model(cfg)
    assert check_against_model(converted, model.state_dict()) == []
    model.load_state_dict(converted)


def test_a_checkpoint_of_another_variant_is_explained(tmp_path):
    facts = official_model_facts(official_variant_state_dict(_tsv(), "rects"))
    problems = check_official_against_config(facts, _variant_cfg("vintext", tmp_path),
                                             argparse.Namespace(use_dn=False))
    assert problems == [
        "the checkpoint has 4 feature levels, the config 5 (MODEL.ESTS.NUM_FEATURE_LEVELS)",
        "a 4-level model reads 3 backbone stages (the rest is one extra stride-2 level); "
        "MODEL.RESNETS.OUT_FEATURES lists 4",
        "the checkpoint has 5463 recognition classes, the config 107 (MODEL.ESTS.VOC_SIZE / VOCABULARY / CUSTOM_DICT)",
        "the official run trained without denoising (args.use_dn=False) but MODEL.ESTS.DN.ENABLED is True",
        "this is the official ReCTS (Chinese) model: use configs/ESTS/ReCTS-Finetune.yaml",
    ]


def _convert_main():
    spec = importlib.util.spec_from_file_location("convert_official_weights",
                                                  REPO_ROOT / "tools" / "convert_official_weights.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


def test_cli_accepts_the_official_rects_checkpoint_and_checks_denoising(tmp_path, capsys):
    official = official_variant_state_dict(_tsv(), "rects")
    source = tmp_path / "rects_checkpoint.pth"
    torch.save({"model": official, "epoch": 72, "args": argparse.Namespace(use_dn=False, num_rec_classes=5463)},
               source)
    config = str(REPO_ROOT / "configs" / "ESTS" / "ReCTS-Finetune.yaml")
    vocab = _code_point_pickle(tmp_path, 5463)
    main = _convert_main()
    assert main([str(source), str(tmp_path / "ok.pth"), "--config-file", config,
                 "MODEL.ESTS.CUSTOM_DICT", vocab, "MODEL.WEIGHTS", ""]) == 0
    assert "official ReCTS (Chinese) model" in capsys.readouterr().out
    assert main([str(source), str(tmp_path / "bad.pth"), "--config-file", config,
                 "MODEL.ESTS.CUSTOM_DICT", vocab, "MODEL.ESTS.DN.ENABLED", "True"]) == 1
    assert "trained without denoising (args.use_dn=False)" in capsys.readouterr().err
    assert not (tmp_path / "bad.pth").exists()
