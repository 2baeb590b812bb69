"""Other scripts end to end on CPU: a Vietnamese (VinText vocabulary) and a Chinese-style (character file)
vocabulary go through load -> train steps -> inference -> evaluation -> demo picture."""
import json
import zipfile

import numpy as np
import pytest
import torch
from detectron2.data import DatasetCatalog
from PIL import Image

import ests_d2.modeling  # noqa: F401  (registers the ESTS meta-architecture)
from ests_d2.config import load_ests_config
from ests_d2.data import register_text_instances
from ests_d2.data.synthetic import synthetic_paths, write_synthetic_split
from ests_d2.engine import Trainer
from ests_d2.structures import load_vocabulary
from ests_d2.utils.visualization import TextPainter, draw_text_instances
from tests.shared_paths import REPO_ROOT

CHINESE = "中文字银行招商国人大小山水火木金土日月上下口"[:23]  # '口' is a real character here
SMALL_INPUT = ("INPUT.MIN_SIZE_TRAIN", (128,), "INPUT.MAX_SIZE_TRAIN", 192, "INPUT.MIN_SIZE_TEST", 128,
               "INPUT.MAX_SIZE_TEST", 192, "DATALOADER.NUM_WORKERS", 0, "MODEL.DEVICE", "cpu", "SOLVER.MAX_ITER", 2,
               "SOLVER.STEPS", (), "SOLVER.CHECKPOINT_PERIOD", 100, "SOLVER.IMS_PER_BATCH", 2,
               "MODEL.ESTS.ENC_LAYERS", 1, "MODEL.ESTS.DEC_LAYERS", 1)


def _train_evaluate_draw(cfg, test_name):
    """Train cfg.SOLVER.MAX_ITER steps, evaluate ``test_name``, draw its first image; (results, picture, texts)."""
    torch.manual_seed(0)
    trainer = Trainer(cfg)
    trainer.train()
    results = Trainer.test(cfg, trainer.model)  # one test set: detectron2 returns its results directly
    record = DatasetCatalog.get(test_name)[0]
    with torch.no_grad():
        instances = trainer.model.eval()([Trainer.build_test_mapper(cfg)(record)])[0]["instances"].to("cpu")
    image = np.asarray(Image.open(record["file_name"]).convert("RGB"))
    picture = draw_text_instances(image, instances[:5], TextPainter())
    assert picture.shape == image.shape
    return results, picture, list(instances.texts)


@pytest.mark.slow
def test_vietnamese_synthetic_set_trains_evaluates_and_draws(tmp_path):
    root = tmp_path / "synthetic_vi"
    write_synthetic_split(str(root), "train", 4, 10, "vi")
    write_synthetic_split(str(root), "test", 1, 11, "vi")
    names = {}
    for split in ("train", "test"):
        paths = synthetic_paths(str(root), split)
        names[split] = f"e2e_vi_{split}_{tmp_path.name}"
        register_text_instances(names[split], paths["json_file"], paths["image_root"], eval_protocol="unicode",
                                eval_gt_zip=paths["eval_gt_zip"], voc_size=107, rec_pad_id=105)
    cfg = load_ests_config(str(REPO_ROOT / "configs" / "ESTS" / "Synthetic-Vietnamese-Tiny.yaml"), [
        *SMALL_INPUT, "DATASETS.TRAIN", (names["train"],), "DATASETS.TEST", (names["test"],),
        "OUTPUT_DIR", str(tmp_path / "out")])
    results, picture, texts = _train_evaluate_draw(cfg, names["test"])

    assert set(results) == {"text_det", "text_e2e"}
    assert all(0.0 <= v <= 1.0 for run in results.values() for v in run.values())
    vocab = load_vocabulary("vintext")
    assert all(isinstance(t, str) and "ˆ" not in t for t in texts)  # decoded: marks recomposed into letters
    with zipfile.ZipFile(synthetic_paths(str(root), "test")["eval_gt_zip"]) as archive:
        gt_text = "".join(archive.read(n).decode("utf-8") for n in archive.namelist())
    words = [a["text"] for a in json.load(open(synthetic_paths(str(root), "test")["json_file"]))["annotations"]]
    assert any(ord(c) > 127 for w in words for c in w)  # real Vietnamese letters in the labels ...
    assert all(w in gt_text for w in words)  # ... kept as UTF-8 in the GT zip
    assert vocab.decode(vocab.encode(words[0], 25)) == words[0]
    assert picture.std() > 5


def _chinese_split(folder, vocab, num_images, seed):
    """COCO-text json of noise images with straight words of the character list (labels need not be legible)."""
    rng = np.random.default_rng(seed)
    images, annotations = [], []
    (folder / "images").mkdir(parents=True, exist_ok=True)
    for image_id in range(1, num_images + 1):
        Image.fromarray(rng.integers(0, 256, (160, 200, 3), dtype=np.uint8)).save(folder / f"images/{image_id}.png")
        images.append({"id": image_id, "file_name": f"{image_id}.png", "height": 160, "width": 200})
        for k in range(2):
            x0, y0 = 20 + 80 * k, 40 + 50 * k
            text = "".join(rng.choice(list(CHINESE), 3))
            top = [x0 + 20 * i for i in range(4)]
            beziers = [v for x in top for v in (x, y0)] + [v for x in top[::-1] for v in (x, y0 + 25)]
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": 1, "iscrowd": 0,
                                "bbox": [x0, y0, 60, 25], "bezier_pts": beziers, "rec": vocab.encode(text, 25),
                                "area": 1500})
    path = folder / "data.json"
    path.write_text(json.dumps({"images": images, "annotations": annotations,
                                "categories": [{"id": 1, "name": "text"}]}, ensure_ascii=False), encoding="utf-8")
    return str(path), str(folder / "images")


@pytest.mark.slow
def test_chinese_character_list_trains_evaluates_and_draws(tmp_path):
    char_file = tmp_path / "chars.txt"
    char_file.write_text("\n".join(CHINESE) + "\n", encoding="utf-8")
    vocab = load_vocabulary("char_file", str(char_file), voc_size=len(CHINESE) + 2)
    names = {}
    for split, n, seed in (("train", 4, 0), ("test", 1, 1)):
        json_file, image_root = _chinese_split(tmp_path / split, vocab, n, seed)
        names[split] = f"e2e_zh_{split}_{tmp_path.name}"
        register_text_instances(names[split], json_file, image_root, eval_protocol="unicode",
                                voc_size=vocab.num_classes)
    cfg = load_ests_config(str(REPO_ROOT / "configs" / "ESTS" / "Synthetic-Tiny.yaml"), [
        *SMALL_INPUT, "MODEL.ESTS.VOCABULARY", "char_file", "MODEL.ESTS.CUSTOM_DICT", str(char_file),
        "MODEL.ESTS.VOC_SIZE", vocab.num_classes, "DATASETS.TRAIN", (names["train"],),
        "DATASETS.TEST", (names["test"],), "OUTPUT_DIR", str(tmp_path / "out")])
    results, picture, texts = _train_evaluate_draw(cfg, names["test"])
    assert set(results) == {"text_det", "text_e2e"}
    assert (tmp_path / "out" / "inference" / names["test"] / "text_e2e_det.zip").is_file()
    assert all(c in CHINESE or c == "口" for t in texts for c in t)  # decoded with the character list
    assert picture.std() > 5
