"""The embedded synthetic data: deterministic, exact labels, a parseable eval GT zip."""
import json
import os

import cv2
import numpy as np
import pytest
from detectron2.data import MetadataCatalog
from shapely.geometry import Polygon

from ests_d2.data import synthetic
from ests_d2.data.datasets import _load_synthetic
from ests_d2.evaluation.rrc_format import read_zip
from ests_d2.data.text_json import load_text_json
from ests_d2.structures import CharVocabulary, EN_CHARACTERS, bezier_to_polygon


def test_same_seed_gives_identical_files(tmp_path):
    for name in ("a", "b"):
        synthetic.write_synthetic_split(str(tmp_path / name), "train", num_images=4, seed=7)
    synthetic.write_synthetic_split(str(tmp_path / "c"), "train", num_images=4, seed=8)
    read = lambda name, f: (tmp_path / name / f).read_bytes()  # noqa: E731
    assert read("a", "train.json") == read("b", "train.json")
    assert read("a", "gt_synthetic_text_train.zip") == read("b", "gt_synthetic_text_train.zip")
    assert read("a", "images/train/train_00003.jpg") == read("b", "images/train/train_00003.jpg")
    assert read("a", "train.json") != read("c", "train.json")


@pytest.mark.parametrize("index", range(6))
def test_labels_are_exact(index):
    image, instances, masks = synthetic.render_synthetic_image(np.random.default_rng([0, index]), return_masks=True)
    h, w = image.shape[:2]
    assert synthetic.IMAGE_SHORT_SIDE[0] <= min(h, w) <= synthetic.IMAGE_SHORT_SIDE[1] and image.dtype == np.uint8
    assert instances, "every image gets at least one word"
    for inst, coverage in zip(instances, masks):
        glyphs = coverage >= 128
        assert glyphs.sum() > 20
        # Every drawn glyph pixel lies inside the labelled 16-point polygon. The polygon's chords cut the
        # curved sides by < 1 px (sagitta of 7 chords on the flattest allowed arc), hence 1 px of slack.
        region = np.zeros((h, w), np.uint8)
        poly = bezier_to_polygon(np.asarray(inst["beziers"])).reshape(-1, 2)
        cv2.fillPoly(region, [np.rint(poly - 0.5).astype(np.int32)], 1)  # pixel i covers [i, i+1)
        region = cv2.dilate(region, np.ones((3, 3), np.uint8))
        assert not (glyphs & (region == 0)).any()
        # ... and the text fills the region's length (no empty label): glyphs reach both ends.
        x, y, bw, bh = inst["bbox_xywh"]
        assert 0 <= x and 0 <= y and x + bw <= w and y + bh <= h
        ys, xs = np.nonzero(glyphs)
        assert xs.min() >= x - 1 and xs.max() <= x + bw + 1 and ys.min() >= y - 1 and ys.max() <= y + bh + 1
        assert Polygon(poly).is_valid
    # words never overlap
    union = np.sum([m >= 128 for m in masks], axis=0)
    assert union.max() <= 1


def test_eval_gt_zip_and_json_agree(tmp_path):
    synthetic.write_synthetic_split(str(tmp_path), "test", num_images=5, seed=1)
    paths = synthetic.synthetic_paths(str(tmp_path), "test")
    with open(paths["json_file"], encoding="utf-8") as f:
        coco = json.load(f)
    gt = {int(k): v for k, v in read_zip(paths["eval_gt_zip"], strict=True).items()}
    assert sorted(gt) == [img["id"] for img in coco["images"]] == [1, 2, 3, 4, 5]
    vocab = CharVocabulary(EN_CHARACTERS)
    for img in coco["images"]:
        anns = [a for a in coco["annotations"] if a["image_id"] == img["id"]]
        assert len(gt[img["id"]]) == len(anns)
        for line, ann in zip(gt[img["id"]], anns):
            points, text = line.points, line.text
            assert text == ann["text"] and (text == "###") == bool(ann["iscrowd"])
            assert vocab.decode(ann["rec"]) == ann["text"]
            poly = np.asarray(ann["polys"]).reshape(-1, 2)
            assert len(points) == 16
            np.testing.assert_array_equal(points[0], np.rint(poly[0]))  # first point kept, rest reversed
            np.testing.assert_array_equal(points[1:], np.rint(poly[1:][::-1]))
            assert Polygon(points).exterior.is_ccw != Polygon(poly).exterior.is_ccw  # orientation flipped
    dicts = load_text_json(paths["json_file"], paths["image_root"], "synthetic")
    assert [d["image_id"] for d in dicts] == [1, 2, 3, 4, 5]
    assert all(min(d["height"], d["width"]) >= synthetic.IMAGE_SHORT_SIDE[0] for d in dicts)


def test_ensure_generates_once_and_regenerates_stale_caches(tmp_path, monkeypatch):
    monkeypatch.setattr(synthetic, "SPLITS", {"train": (3, 0), "test": (2, 1)})
    root = str(tmp_path / "synthetic_text")
    synthetic.ensure_synthetic_text(root)
    for split in ("train", "test"):
        for path in synthetic.synthetic_paths(root, split).values():
            assert os.path.exists(path), path
    lexicon = (tmp_path / "synthetic_text" / "lexicons" / "lexicon.txt").read_text().split()
    assert "STATION" in lexicon and all(word == word.upper() for word in lexicon)
    stamp = os.path.getmtime(os.path.join(root, "train.json"))
    synthetic.ensure_synthetic_text(root)  # up to date: untouched
    assert os.path.getmtime(os.path.join(root, "train.json")) == stamp
    monkeypatch.setattr(synthetic, "SPLITS", {"train": (4, 0), "test": (2, 1)})
    synthetic.ensure_synthetic_text(root)  # parameters changed: regenerated
    assert len(json.loads((tmp_path / "synthetic_text" / "train.json").read_text())["images"]) == 4
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".")]  # no temporary folder left behind


def test_registered_loader_generates_on_first_use(tmp_path, monkeypatch):
    monkeypatch.setattr(synthetic, "SPLITS", {"train": (2, 0), "test": (3, 1)})
    root = str(tmp_path / "synthetic_text")
    dicts = _load_synthetic(root, "test", "synthetic_text_test")
    assert len(dicts) == 3 and all(a["category_id"] == 0 for d in dicts for a in d["annotations"])
    meta = MetadataCatalog.get("synthetic_text_test")
    assert meta.eval_protocol == "generic" and meta.evaluator_type == "text"
    # the registered metadata points at the same file names under the default root
    for key, path in synthetic.synthetic_paths(root, "test").items():
        assert os.path.relpath(path, root) == os.path.relpath(meta.get(key), os.path.dirname(meta.json_file))
