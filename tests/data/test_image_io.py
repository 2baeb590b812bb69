"""Image reading: identical to detectron2 on valid images, 16-bit grayscale scaled, every failure named."""
import json

import cv2
import numpy as np
import pytest
import torch
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.detection_utils import read_image
from PIL import Image

from ests_d2.data import TextSpottingDatasetMapper
from ests_d2.data.datasets import ICDAR2015_SAMPLES_DIR, register_text_instances
from ests_d2.data.image_io import ImageReadError, read_text_image
from ests_d2.data.text_json import load_text_json
from tests.data.data_helpers import make_text_cfg, scene_text_dir


def _noise_jpeg_bytes(h=120, w=200):
    rng = np.random.default_rng(0)
    return cv2.imencode(".jpg", rng.integers(0, 256, (h, w, 3), dtype=np.uint8))[1].tobytes()


def _bad_images(folder):
    """file name -> bytes of a zero-byte file, a text file named .jpg and a JPEG cut half-way."""
    jpeg = _noise_jpeg_bytes()
    files = {"empty.jpg": b"", "notes.jpg": b"this is a text file, not an image\n", "cut.jpg": jpeg[: len(jpeg) // 2]}
    for name, data in files.items():
        (folder / name).write_bytes(data)
    return files


def test_valid_images_read_bit_identically_to_detectron2():
    paths = sorted(scene_text_dir().glob("images/*/*.jpg")) + sorted(ICDAR2015_SAMPLES_DIR.glob("images/*.jpg"))
    assert len(paths) >= 38
    for i, path in enumerate(paths):
        for image_format in ("RGB", "BGR") if i < 3 else ("RGB",):
            np.testing.assert_array_equal(read_text_image(str(path), image_format),
                                          read_image(str(path), format=image_format), err_msg=str(path))


def test_16bit_grayscale_png_is_scaled_not_white(tmp_path):
    gray8 = np.tile(np.arange(0, 256, 2, dtype=np.uint8), (40, 1))  # 40 x 128 gradient
    cv2.imwrite(str(tmp_path / "g16.png"), gray8.astype(np.uint16) * 257)  # the same image in 16 bits
    cv2.imwrite(str(tmp_path / "g8.png"), gray8)
    assert Image.open(tmp_path / "g16.png").mode == "I;16"
    np.testing.assert_array_equal(read_text_image(str(tmp_path / "g16.png"), "RGB"), np.dstack([gray8] * 3))
    # the test mapper sees the 16-bit file exactly as the 8-bit one (it used to see a white image)
    mapper = TextSpottingDatasetMapper(make_text_cfg(), is_train=False)
    images = [mapper({"file_name": str(tmp_path / f"{name}.png"), "image_id": 1, "height": 40, "width": 128})["image"]
              for name in ("g16", "g8")]
    assert torch.equal(images[0], images[1]) and images[0].float().std() > 50


def test_32bit_and_float_images_are_refused_clearly(tmp_path):
    Image.fromarray(np.full((8, 8), 70000, np.int32)).save(tmp_path / "i32.tif")
    with pytest.raises(ImageReadError, match=r"i32.tif: cannot read the image: .*32-bit integer image"):
        read_text_image(str(tmp_path / "i32.tif"), "RGB")
    Image.fromarray(np.zeros((8, 8), np.float32)).save(tmp_path / "f.tif")
    with pytest.raises(ImageReadError, match=r"f.tif: cannot read the image: .*floating-point image"):
        read_text_image(str(tmp_path / "f.tif"), "RGB")


@pytest.fixture
def bad_image_dataset(tmp_path):
    """A registered dataset whose json lists one good image and three unreadable ones."""
    (tmp_path / "good.jpg").write_bytes(_noise_jpeg_bytes())
    names = ["good.jpg"] + list(_bad_images(tmp_path))
    images = [{"id": i + 1, "file_name": name, "height": 120, "width": 200} for i, name in enumerate(names)]
    json_file = tmp_path / "bad_images.json"
    json_file.write_text(json.dumps({"images": images, "annotations": []}))
    register_text_instances("bad_images_text", str(json_file), str(tmp_path))
    yield str(json_file), tmp_path
    DatasetCatalog.remove("bad_images_text")
    MetadataCatalog.remove("bad_images_text")


@pytest.mark.parametrize("name", ["empty.jpg", "notes.jpg", "cut.jpg"])
def test_read_failure_names_file_and_dataset(bad_image_dataset, name):
    _, folder = bad_image_dataset
    mapper = TextSpottingDatasetMapper(make_text_cfg(), is_train=True)
    record = {"file_name": str(folder / name), "image_id": 2, "height": 120, "width": 200, "annotations": []}
    with pytest.raises(ImageReadError, match="cannot read the image") as e:
        mapper(record)
    assert f"{folder / name} (dataset 'bad_images_text')" in str(e.value)


def test_read_failure_in_a_dataloader_worker_names_the_file(bad_image_dataset):
    """The message is what reaches the training log from a worker process."""
    _, folder = bad_image_dataset
    mapper = TextSpottingDatasetMapper(make_text_cfg(), is_train=True)
    record = {"file_name": str(folder / "cut.jpg"), "image_id": 4, "height": 120, "width": 200, "annotations": []}
    loader = torch.utils.data.DataLoader([record], batch_size=1, num_workers=1, collate_fn=lambda b: mapper(b[0]))
    with pytest.raises(ImageReadError) as e:
        next(iter(loader))
    assert str(folder / "cut.jpg") in str(e.value) and "truncated" in str(e.value)


def test_optional_pre_check_lists_every_bad_image(bad_image_dataset, monkeypatch):
    json_file, folder = bad_image_dataset
    assert len(load_text_json(json_file, str(folder))) == 4  # off by default: only a missing file is an error
    with pytest.raises(ImageReadError, match="3 of 4 images cannot be used") as e:
        load_text_json(json_file, str(folder), "bad_images_text", verify_images=True)
    message = str(e.value)
    assert json_file in message and "dataset 'bad_images_text'" in message and "good.jpg" not in message
    assert f"'{folder / 'empty.jpg'}': empty file (0 bytes)" in message
    assert f"'{folder / 'notes.jpg'}': UnidentifiedImageError" in message
    assert f"'{folder / 'cut.jpg'}': OSError: image file is truncated" in message
    monkeypatch.setenv("ESTS_VERIFY_IMAGES", "1")  # the switch for registered datasets (lazy loading)
    with pytest.raises(ImageReadError, match="3 of 4 images cannot be used"):
        DatasetCatalog.get("bad_images_text")


def test_pre_check_passes_real_images_and_finds_wrong_sizes(tmp_path):
    root = scene_text_dir()
    dicts = load_text_json(str(root / "coco_text" / "ic15_test.json"), str(root / "images" / "ic15_test"),
                           verify_images=True)
    assert len(dicts) == 24
    # a JPEG with bytes after its end marker is still fine; a PNG cut short and a wrong size are not
    (tmp_path / "tail.jpg").write_bytes(_noise_jpeg_bytes() + b"\0" * 2000)
    noise = np.random.default_rng(1).integers(0, 256, (120, 200, 3), dtype=np.uint8)
    png = cv2.imencode(".png", noise)[1].tobytes()
    (tmp_path / "cut.png").write_bytes(png[: len(png) // 2])
    cv2.imwrite(str(tmp_path / "small.jpg"), np.zeros((60, 100, 3), np.uint8))
    images = [{"id": i + 1, "file_name": n, "height": 120, "width": 200}
              for i, n in enumerate(["tail.jpg", "cut.png", "small.jpg"])]
    (tmp_path / "a.json").write_text(json.dumps({"images": images, "annotations": []}))
    with pytest.raises(ImageReadError, match="2 of 3 images cannot be used") as e:
        load_text_json(str(tmp_path / "a.json"), str(tmp_path), verify_images=True)
    assert "tail.jpg" not in str(e.value) and "'cut.png'" not in str(e.value)  # full paths are named
    assert f"'{tmp_path / 'cut.png'}'" in str(e.value)
    assert "the image is 100x60 but the json says 200x120" in str(e.value)
