"""Official checkpoint conversion: names, aliases, computed buffers, problems reported in words."""
import argparse
import importlib.util
import json

import pytest
import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.modeling import build_model

import ests_d2.modeling  # noqa: F401
from ests_d2.modeling.official_checkpoint import (
    check_against_model,
    convert_official_state_dict,
    official_text_pos_inv_freq,
    to_official_state_dict,
)
from tests.modeling.golden_weights import (
    official_recipe_state_dict,
    read_official_tsv,
    tensor_sha256_prefix,
)
from tests.modeling.model_config import tiny_ests_cfg
from tests.shared_paths import require_golden_file, require_shared
from tests.shared_paths import REPO_ROOT


def _load_tool():
    """tools/ is a folder of scripts, not a package: load the converter CLI by path."""
    spec = importlib.util.spec_from_file_location("convert_official_weights",
                                                  REPO_ROOT / "tools" / "convert_official_weights.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


convert_main = _load_tool().main


@pytest.fixture(scope="module")
def tiny_model():
    torch.manual_seed(0)
    return build_model(tiny_ests_cfg())


@pytest.fixture(scope="module")
def recipe():
    return official_recipe_state_dict(require_shared("docs/state_dict_tt_finetune.tsv"))


def test_recipe_weights_match_the_golden_checksums(recipe):
    checksums = json.loads(require_golden_file("weights_checksums.json").read_text())
    assert len(recipe) == checksums["n_entries"] == 783
    for entry in checksums["entries"]:
        tensor = recipe[entry["name"]]
        assert list(tensor.shape) == entry["shape"], entry["name"]
        assert tensor_sha256_prefix(tensor, len(entry["sha256"])) == entry["sha256"], entry["name"]
    for alias, source in checksums["aliases"].items():
        assert recipe[alias].data_ptr() == recipe[source].data_ptr()


def test_backbone_names_follow_detectron2(recipe):
    converted, _ = convert_official_state_dict(recipe)
    for official, ours in [
        ("backbone.0.body.conv1.weight", "backbone.stem.conv1.weight"),
        ("backbone.0.body.bn1.running_var", "backbone.stem.conv1.norm.running_var"),
        ("backbone.0.body.layer1.0.conv1.weight", "backbone.res2.0.conv1.weight"),
        ("backbone.0.body.layer3.5.bn3.bias", "backbone.res4.5.conv3.norm.bias"),
        ("backbone.0.body.layer2.0.downsample.0.weight", "backbone.res3.0.shortcut.weight"),
        ("backbone.0.body.layer4.0.downsample.1.running_mean", "backbone.res5.0.shortcut.norm.running_mean"),
        ("beziers_embed.0.layers.2.bias", "transformer.decoder.polygon_embed.layers.2.bias"),
        ("transformer.decoder.class_embed.0.weight", "transformer.decoder.class_embed.weight"),
    ]:
        assert torch.equal(converted[ours], recipe[official]), (official, ours)


def test_round_trip_restores_every_official_name(recipe):
    converted, report = convert_official_state_dict(recipe)
    back = to_official_state_dict(converted)
    tsv = read_official_tsv(require_shared("docs/state_dict_tt_finetune.tsv"))
    assert set(back) == {row["name"] for row in tsv}
    assert all(torch.equal(back[k], recipe[k]) for k in recipe)
    again, _ = convert_official_state_dict(back)
    assert set(again) == set(converted) and all(torch.equal(again[k], converted[k]) for k in converted)


def test_round_trip_of_a_model_state_dict(tiny_model):
    ours = tiny_model.state_dict()
    official = to_official_state_dict(ours, num_decoder_layers=2)
    assert "transformer.rec_cls.weight" in official and "bbox_embed.1.layers.0.bias" in official
    assert "backbone.0.body.layer1.0.conv1.weight" in official
    converted, report = convert_official_state_dict(official)
    assert check_against_model(converted, ours) == []
    assert report.unmapped == [] and report.aliases_merged
    assert all(torch.equal(converted[k], ours[k]) for k in ours)


def test_aliases_with_different_values_are_rejected(tiny_model):
    official = to_official_state_dict(tiny_model.state_dict(), num_decoder_layers=2)
    official["class_embed.1.bias"] = official["class_embed.1.bias"] + 1
    with pytest.raises(ValueError, match="class_embed.1.bias.*alias"):
        convert_official_state_dict(official)


def test_unknown_keys_and_wrong_text_table_are_reported(tiny_model):
    official = to_official_state_dict(tiny_model.state_dict(), num_decoder_layers=2)
    official["ema_model.something"] = torch.zeros(1)
    _, report = convert_official_state_dict(official)
    assert report.unmapped == ["ema_model.something"]
    assert "ema_model.something" in report.summary()
    official["transformer.decoder.text_pos_embed.inv_freq"] = official_text_pos_inv_freq(256) * 2
    with pytest.raises(ValueError, match="inv_freq"):
        convert_official_state_dict(official)


def test_vocabulary_and_missing_keys_are_explained(tiny_model):
    ours = tiny_model.state_dict()
    converted, _ = convert_official_state_dict(to_official_state_dict(ours, num_decoder_layers=2))
    converted["transformer.decoder.rec_cls.weight"] = torch.zeros(107, 256)
    converted["transformer.decoder.rec_cls.bias"] = torch.zeros(107)
    converted["transformer.decoder.rec_proj.weight"] = torch.zeros(256, 107)
    del converted["transformer.tgt_embed.weight"]
    problems = check_against_model(converted, ours)
    assert problems[0].startswith("recognition vocabulary mismatch: the checkpoint has 107 recognition classes, "
                                  "the model 97")
    assert any("missing" in p and "transformer.tgt_embed.weight" in p for p in problems)
    assert len(problems) == 2  # the vocabulary-sized tensors are not reported again as shape mismatches


@pytest.mark.parametrize("layout", ["official", "bare"])
def test_cli_writes_a_detectron2_checkpoint(tmp_path, tiny_model, layout):
    official = to_official_state_dict(tiny_model.state_dict(), num_decoder_layers=2)
    if layout == "official":
        payload = {"model": official, "optimizer": {"state": {}, "param_groups": []}, "lr_scheduler": {},
                   "epoch": 3, "args": argparse.Namespace(lr=1e-4)}
    else:
        payload = official
    source, target = tmp_path / "official.pth", tmp_path / "out" / "model.pth"
    torch.save(payload, source)
    assert convert_main([str(source), str(target)]) == 0
    written = torch.load(target, weights_only=True)
    assert set(written) == {"model"}
    torch.manual_seed(1)
    fresh = build_model(tiny_ests_cfg())
    DetectionCheckpointer(fresh).load(str(target))
    assert all(torch.equal(fresh.state_dict()[k], v) for k, v in tiny_model.state_dict().items())


def test_cli_rejects_non_tensor_payloads(tmp_path):
    source = tmp_path / "bad.pth"
    torch.save({"model": {"a": torch.zeros(1), "b": 3}}, source)
    with pytest.raises(SystemExit, match="non-tensor"):
        convert_main([str(source), str(tmp_path / "out.pth")])


def test_cli_checks_the_result_against_a_config(tmp_path, tiny_model, capsys):
    source = tmp_path / "official.pth"
    torch.save(to_official_state_dict(tiny_model.state_dict(), num_decoder_layers=2), source)
    config = tmp_path / "tiny.yaml"
    config.write_text(tiny_ests_cfg().dump())
    assert convert_main([str(source), str(tmp_path / "ok.pth"), "--config-file", str(config)]) == 0
    assert convert_main([str(source), str(tmp_path / "bad.pth"), "--config-file", str(config),
                         "MODEL.ESTS.VOC_SIZE", "107", "MODEL.ESTS.CUSTOM_DICT", str(_dict_file(tmp_path, 105))]) == 1
    assert "recognition vocabulary mismatch: the checkpoint has 97 recognition classes, the model 107" in (
        capsys.readouterr().err)
    assert not (tmp_path / "bad.pth").exists()


def _dict_file(folder, num_chars):
    path = folder / "chars.txt"
    path.write_text("\n".join(chr(0x4E00 + i) for i in range(num_chars)) + "\n", encoding="utf-8")
    return path
