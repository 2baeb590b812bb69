"""The synthetic generator's Vietnamese option: DejaVu-rendered words, VinText ids, Unicode GT."""
import json
import zipfile

import numpy as np
from detectron2.data import MetadataCatalog

from ests_d2.data import synthetic
from ests_d2.data.datasets import _load_synthetic
from ests_d2.structures import load_vocabulary
from ests_d2.utils.visualization import default_font_path, missing_glyphs


def test_vietnamese_words_are_renderable_single_tone_syllables():
    vocab = load_vocabulary("vintext")
    for word in synthetic.VIETNAMESE_WORDS:
        for form in (word, word.upper(), word.capitalize()):
            assert vocab.decode(vocab.encode(form, 25)) == form  # raises for two tone marks
    assert not missing_glyphs(default_font_path(), "".join(synthetic.VIETNAMESE_WORDS).upper())


def test_vietnamese_split_has_vintext_ids_and_unicode_gt(tmp_path):
    synthetic.write_synthetic_split(str(tmp_path), "train", 3, 10, "vi")
    paths = synthetic.synthetic_paths(str(tmp_path), "train")
    data = json.loads(open(paths["json_file"], encoding="utf-8").read())
    vocab = load_vocabulary("vintext")
    texts = [a["text"] for a in data["annotations"] if a["text"] != "###"]
    assert texts and any(ord(c) > 127 for t in texts for c in t)
    assert all(vocab.decode(a["rec"]) == a["text"] and a["rec"][-1] == 105 for a in data["annotations"])
    with zipfile.ZipFile(paths["eval_gt_zip"]) as archive:
        gt = "".join(archive.read(n).decode("utf-8") for n in archive.namelist())
    assert all(f"####{t}" in gt for t in texts)


def test_registered_vietnamese_set_is_generated_on_first_use(tmp_path, monkeypatch):
    monkeypatch.setattr(synthetic, "VIETNAMESE_SPLITS", {"train": (2, 10), "test": (2, 11)})
    dicts = _load_synthetic(str(tmp_path / "synthetic_text_vi"), "test", "synthetic_vi_test", "vi")
    assert len(dicts) == 2 and all(len(a["rec"]) == 25 for d in dicts for a in d["annotations"])
    meta = MetadataCatalog.get("synthetic_vi_test")
    assert (meta.voc_size, meta.rec_pad_id, meta.eval_protocol) == (107, 105, "unicode")
    assert np.all([a["rec"][-1] == 105 for d in dicts for a in d["annotations"]])
