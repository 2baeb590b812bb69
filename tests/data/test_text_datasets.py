"""Dataset registration: lazy, with the metadata the evaluator needs; the embedded ICDAR2015 samples."""
import os
import zipfile
from pathlib import Path

import pytest
from detectron2.data import DatasetCatalog, MetadataCatalog

import ests_d2.data
from ests_d2.data.datasets import (
    ICDAR2015_SAMPLES_DIR,
    register_all_text_datasets,
    register_text_instances,
)
from ests_d2.data.image_io import ImageReadError
from ests_d2.evaluation.protocol import PROTOCOLS
from ests_d2.evaluation.rrc_format import read_zip
from tests.data.data_helpers import scene_text_dir

BUILTIN = (
    "totaltext_train", "totaltext_test", "ctw1500_train", "ctw1500_test", "icdar2013_train", "icdar2015_train",
    "icdar2015_test", "mlt2017_train", "syntext1_train", "syntext2_train", "synthetic_text_train",
    "synthetic_text_test", "icdar2015_samples",
)
EVAL_KEYS = ("evaluator_type", "eval_protocol", "eval_gt_zip", "lexicon_root", "voc_size")


@pytest.mark.parametrize("name", BUILTIN)
def test_builtin_datasets_are_registered_with_eval_metadata(name):
    assert name in DatasetCatalog.list()
    meta = MetadataCatalog.get(name)
    for key in EVAL_KEYS:
        assert hasattr(meta, key), key
    assert meta.evaluator_type == "text" and meta.eval_protocol in PROTOCOLS and meta.voc_size == 97
    assert meta.thing_classes == ["text"]


def test_official_layout_and_protocols():
    tt = MetadataCatalog.get("totaltext_test")
    assert tt.eval_protocol == "totaltext"
    assert tt.eval_gt_zip.endswith(os.path.join("evaluation", "gt_totaltext.zip"))
    assert tt.lexicon_root.endswith(os.path.join("evaluation", "lexicons", "totaltext"))
    assert tt.json_file.endswith(os.path.join("totaltext", "test.json"))
    assert MetadataCatalog.get("ctw1500_test").json_file.endswith(
        os.path.join("CTW1500", "annotations", "test_ctw1500_maxlen25.json"))
    assert MetadataCatalog.get("icdar2015_test").eval_gt_zip.endswith("gt_icdar2015.zip")
    assert MetadataCatalog.get("syntext2_train").image_root.endswith(os.path.join("syntext2", "emcs_imgs"))
    assert MetadataCatalog.get("synthetic_text_test").eval_protocol == "generic"
    assert MetadataCatalog.get("synthetic_text_test").eval_gt_zip.endswith("gt_synthetic_text_test.zip")


def test_registration_reads_nothing(tmp_path):
    """Registering under a root that does not exist works; the error comes only on loading."""
    root = tmp_path / "nowhere"
    register_text_instances("lazy_text_test", str(root / "a.json"), str(root / "images"), eval_protocol="ctw1500")
    try:
        assert MetadataCatalog.get("lazy_text_test").eval_protocol == "ctw1500"
        with pytest.raises(ValueError, match="annotation file not found"):
            DatasetCatalog.get("lazy_text_test")
    finally:
        DatasetCatalog.remove("lazy_text_test")
        MetadataCatalog.remove("lazy_text_test")
    register_all_text_datasets(str(root))  # idempotent: already registered names are left alone
    assert not root.exists()


def test_protocol_aliases_are_accepted_and_unknown_protocols_rejected():
    register_text_instances("alias_protocol_text", "a.json", "images", eval_protocol="IC15")
    try:
        assert MetadataCatalog.get("alias_protocol_text").eval_protocol == "icdar2015"
    finally:
        DatasetCatalog.remove("alias_protocol_text")
        MetadataCatalog.remove("alias_protocol_text")
    with pytest.raises(ValueError, match="bad_protocol_text.*unknown dataset / protocol 'icdar15x'"):
        register_text_instances("bad_protocol_text", "a.json", "images", eval_protocol="icdar15x")
    assert "bad_protocol_text" not in DatasetCatalog.list()


def test_icdar2015_samples_are_small_labelled_and_attributed():
    files = [p for p in ICDAR2015_SAMPLES_DIR.rglob("*") if p.is_file()]
    assert sum(p.stat().st_size for p in files) < 1_000_000
    assert (ICDAR2015_SAMPLES_DIR / "ATTRIBUTION.md").read_text().count("CC BY 4.0") >= 1
    dicts = DatasetCatalog.get("icdar2015_samples")
    assert len(dicts) == 5 and all(d["height"] == 720 and d["width"] == 1280 for d in dicts)
    gt = {int(k): v for k, v in read_zip(MetadataCatalog.get("icdar2015_samples").eval_gt_zip, strict=True).items()}
    assert sorted(gt) == sorted(d["image_id"] for d in dicts)
    for d in dicts:
        assert len(gt[d["image_id"]]) == len(d["annotations"])
        assert [line.text == "###" for line in gt[d["image_id"]]] == [bool(a["iscrowd"]) for a in d["annotations"]]


def test_icdar2015_samples_gt_is_byte_identical_to_the_official_members():
    official = zipfile.ZipFile(scene_text_dir() / "eval_gt_subset" / "gt_icdar2015.zip")
    ours = zipfile.ZipFile(MetadataCatalog.get("icdar2015_samples").eval_gt_zip)
    assert ours.namelist()
    for member in ours.namelist():
        assert ours.read(member) == official.read(member), member


def test_registration_can_ask_for_the_image_pre_check(tmp_path):
    (tmp_path / "empty.jpg").write_bytes(b"")
    json_file = tmp_path / "a.json"
    json_file.write_text('{"images": [{"id": 1, "file_name": "empty.jpg", "height": 9, "width": 9}], '
                         '"annotations": []}')
    register_text_instances("checked_text", str(json_file), str(tmp_path), verify_images=True)
    try:
        with pytest.raises(ImageReadError, match=r"dataset 'checked_text'.*empty.jpg'?: empty file \(0 bytes\)"):
            DatasetCatalog.get("checked_text")
    finally:
        DatasetCatalog.remove("checked_text")
        MetadataCatalog.remove("checked_text")


def test_data_sources_cite_only_files_inside_the_repository():
    """Docstrings point readers at repository files; a machine-specific absolute path helps nobody."""
    data_package = Path(ests_d2.data.__file__).parent
    for source in data_package.glob("*.py"):
        text = source.read_text(encoding="utf-8")
        assert "/work/" not in text and "shared/docs" not in text, source
