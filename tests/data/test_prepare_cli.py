"""tools/prepare_dataset.py and the engine around the readers: pairing, image ids and sizes, vocabulary, the
summary, the manifest registration, and one-line errors."""
import json
from pathlib import Path

import pytest
from detectron2.data import DatasetCatalog, MetadataCatalog
from PIL import Image

from ests_d2.data.preparation import cli as prepare_cli
from ests_d2.data.preparation.cli import main as prepare_main
from ests_d2.data.preparation.pairing import assign_image_ids
from ests_d2.data.preparation.prepare import prepare_dataset
from ests_d2.data.preparation.readers import NativeFormatError, NativeImage
from ests_d2.data.preparation.registry import register_prepared_datasets
from ests_d2.structures import CharVocabulary


QUAD = "10,10,60,10,60,30,10,30"


def _image(folder: Path, name: str, size=(80, 40), exif_orientation=None):
    folder.mkdir(parents=True, exist_ok=True)
    img = Image.new("RGB", size)
    exif = Image.Exif()
    if exif_orientation:
        exif[0x0112] = exif_orientation
    img.save(folder / name, exif=exif)


def _ic15_folder(tmp_path, lines_by_image):
    images, gts = tmp_path / "images", tmp_path / "gt"
    gts.mkdir(parents=True, exist_ok=True)
    for number, lines in lines_by_image.items():
        _image(images, f"img_{number}.jpg")
        (gts / f"gt_img_{number}.txt").write_text("\ufeff" + "".join(line + "\n" for line in lines), encoding="utf-8")
    return images, gts


def test_cli_writes_json_gt_zip_summary_and_manifest_that_registers(tmp_path, capsys):
    images, gts = _ic15_folder(tmp_path, {3: [f"{QUAD},Café, bar", f"{QUAD},###"], 7: [f"{QUAD},ok"]})
    root = tmp_path / "datasets"
    out = root / "mine"
    assert prepare_main(["icdar2015", "--images", str(images), "--annotations", str(gts), "--out", str(out),
                      "--name", "prep_cli_test", "--eval-gt"]) == 0
    printed = capsys.readouterr().out
    assert "instances             3 (1 don't care)" in printed
    assert "out of vocabulary     1 characters: 'é'x1" in printed
    coco = json.loads((out / "prep_cli_test.json").read_text(encoding="utf-8"))
    assert [(i["id"], i["file_name"], i["width"], i["height"]) for i in coco["images"]] == \
        [(3, "img_3.jpg", 80, 40), (7, "img_7.jpg", 80, 40)]
    first = coco["annotations"][0]
    assert first["text"] == "Café, bar" and first["rec"][:4] == [35, 65, 70, 95] and len(first["rec"]) == 25
    assert first["bbox"] == [10.0, 10.0, 50.0, 20.0] and len(first["polys"]) == 32 and first["fit_error"] == 0
    summary = json.loads((out / "prep_cli_test_summary.json").read_text(encoding="utf-8"))
    assert summary["out_of_vocabulary"] == {"é": 1} and summary["dont_care"] == 1

    assert register_prepared_datasets(str(root)) == ["prep_cli_test"]
    meta = MetadataCatalog.get("prep_cli_test")
    assert (meta.eval_protocol, meta.voc_size, meta.eval_gt_zip) == ("icdar2015", 97, str(out / "gt_prep_cli_test.zip"))
    dicts = DatasetCatalog.get("prep_cli_test")
    assert [len(d["annotations"]) for d in dicts] == [2, 1] and dicts[0]["annotations"][1]["iscrowd"] == 1


def test_a_broken_manifest_is_skipped_not_fatal(tmp_path):
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "ests_datasets.json").write_text("{not json", encoding="utf-8")
    assert register_prepared_datasets(str(tmp_path)) == []


def test_cli_errors_are_one_line_naming_file_and_line(tmp_path, capsys):
    images, gts = _ic15_folder(tmp_path, {1: [f"{QUAD},fine", "10,10,60,x,60,30,10,30,broken"]})
    code = prepare_main(["icdar2015", "--images", str(images), "--annotations", str(gts), "--out", str(tmp_path / "o"),
                      "--name", "x"])
    err = capsys.readouterr().err
    assert code == 1
    assert err == (f"prepare_dataset.py: error: {gts / 'gt_img_1.txt'}:2: coordinates must be numbers, got "
                   "['10', '10', '60', 'x', '60', '30', '10', '30']\n")
    with pytest.raises(NativeFormatError):
        prepare_main(["icdar2015", "--images", str(images), "--annotations", str(gts), "--out", str(tmp_path / "o"),
                   "--name", "x", "--debug"])


def test_cli_an_unexpected_error_is_one_line_naming_its_type(tmp_path, capsys, monkeypatch):
    images, gts = _ic15_folder(tmp_path, {1: [f"{QUAD},fine"]})

    def broken(*_, **__):
        raise RuntimeError("a bug, not the input's fault")

    monkeypatch.setattr(prepare_cli, "prepare_dataset", broken)
    argv = ["icdar2015", "--images", str(images), "--annotations", str(gts), "--out", str(tmp_path / "o"), "--name", "x"]
    assert prepare_main(argv) == 1  # it used to end in a traceback: only input errors were caught
    assert capsys.readouterr().err == ("prepare_dataset.py: error: RuntimeError: a bug, not the input's fault "
                                       "(--debug shows the traceback)\n")
    with pytest.raises(RuntimeError):
        prepare_main(argv + ["--debug"])


def test_custom_dictionary_goes_through_the_vocabulary(tmp_path, capsys):
    images, gts = _ic15_folder(tmp_path, {1: [f"{QUAD},abz"]})
    chars = tmp_path / "chars.txt"
    chars.write_text("a\nb\n", encoding="utf-8")
    args = ["icdar2015", "--images", str(images), "--annotations", str(gts), "--out", str(tmp_path / "o"),
            "--name", "x", "--custom-dict", str(chars)]
    assert prepare_main(args + ["--voc-size", "4"]) == 0  # 2 characters + unknown + padding
    coco = json.loads((tmp_path / "o" / "x.json").read_text(encoding="utf-8"))
    assert coco["annotations"][0]["rec"][:4] == [0, 1, 2, 3] and coco["info"]["voc_size"] == 4
    assert "'z'x1" in capsys.readouterr().out
    assert prepare_main(args) == 1  # the default 97 does not match the dictionary: CharVocabulary says so
    assert "VOC_SIZE is 97" in capsys.readouterr().err
    config = tmp_path / "cfg.yaml"  # the training config's vocabulary is used when no flag says otherwise
    config.write_text(f"MODEL:\n  ESTS:\n    VOC_SIZE: 4\n    CUSTOM_DICT: '{chars}'\n    MAX_TEXT_LEN: 5\n")
    assert prepare_main(args[:-2] + ["--config-file", str(config)]) == 0
    coco = json.loads((tmp_path / "o" / "x.json").read_text(encoding="utf-8"))
    assert coco["annotations"][0]["rec"] == [0, 1, 2, 3, 3]
    capsys.readouterr()
    assert prepare_main(args[:-2] + ["--config-file", str(tmp_path / "missing.yaml")]) == 1
    assert "missing.yaml: cannot be read as an ests-d2 config" in capsys.readouterr().err


def test_pairing_by_number_pairs_file_and_missing_image(tmp_path):
    images, gts = tmp_path / "images", tmp_path / "gt"
    gts.mkdir()
    _image(images, "im0001.jpg")
    _image(images, "photo.jpg")
    (gts / "gt_1.txt").write_text(f"{QUAD},a\n", encoding="utf-8")
    vocab = CharVocabulary.from_config(97)
    result = prepare_dataset("vintext", str(gts), str(images), vocab)
    assert [i["file_name"] for i in result.images] == ["im0001.jpg"] and result.unannotated_images == ["photo.jpg"]
    (gts / "0000177.txt").write_text(f"{QUAD},####b\n", encoding="utf-8")
    with pytest.raises(NativeFormatError, match=r"0000177.txt: cannot find its image .*--pairs"):
        prepare_dataset("totaltext-points", str(gts / "0000177.txt"), str(images), vocab)
    pairs = tmp_path / "pairs.csv"
    pairs.write_text("annotation,image,image_id\n0000177.txt,photo.jpg,\n", encoding="utf-8")
    result = prepare_dataset("totaltext-points", str(gts / "0000177.txt"), str(images), vocab, pairs_file=str(pairs))
    assert [(i["id"], i["file_name"]) for i in result.images] == [(177, "photo.jpg")]  # the eval member's number


def test_image_id_rules():
    def records(*names):
        return [(NativeImage(f"{n}.txt"), f"/x/{n}.jpg") for n in names]

    recs = records("img_5", "img_2")
    assert assign_image_ids(recs, "auto") == "name" and [n.image_id for n, _ in recs] == [5, 2]
    recs = records("shop", "street")
    assert assign_image_ids(recs, "auto") == "sequential" and [n.image_id for n, _ in recs] == [1, 2]
    recs = records("a_1", "b_1")
    with pytest.raises(NativeFormatError, match="missing or repeated"):
        assign_image_ids(recs, "name")


def test_labelme_exif_rotation_degenerate_and_empty_text(tmp_path):
    folder = tmp_path / "labelme"
    _image(folder, "p.jpg", size=(80, 40), exif_orientation=6)  # stored landscape, shown portrait
    shapes = [{"label": "", "points": [[1, 1], [9, 1], [9, 5], [1, 5]], "shape_type": "polygon"},
              {"label": "flat", "points": [[1, 1], [5, 1], [9, 1], [3, 1]], "shape_type": "polygon"},
              {"label": "ok", "points": [[1, 1], [30, 1], [30, 9], [1, 9]], "shape_type": "polygon"}]
    (folder / "p.json").write_text(json.dumps({"imagePath": "p.jpg", "shapes": shapes}), encoding="utf-8")
    result = prepare_dataset("labelme", str(folder), str(folder), CharVocabulary.from_config(97))
    assert (result.images[0]["width"], result.images[0]["height"]) == (40, 80)
    assert [a["text"] for a in result.annotations] == ["###", "ok"] and result.annotations[0]["iscrowd"] == 1
    assert result.empty_texts == 1 and len(result.skipped) == 1
    assert "shape 2: the polygon encloses no area" in result.skipped[0]
