"""Property of the train mapper on every real image: crop + rotation + resize never leaves a ghost instance.

A ghost is a word the crop cut away that the rotation's expanded canvas brings back inside the image, on
black padding. The official pipeline drops the cropped-away words right after the crop; so must the mapper.

The images are the 33 real ones of ``../shared/data/scene_text``, at half size and with no pixel exactly 0,
so that in the mapper's output (colour jitter off) exactly-black pixels are the rotation's padding.
"""
import cv2
import numpy as np
import pytest
from detectron2.data import transforms as T

from ests_d2.data import TextSpottingDatasetMapper
from ests_d2.data.augmentation import InstancePreservingCrop, build_text_augmentations
from ests_d2.data.text_json import load_text_json
from ests_d2.structures import bezier_to_polygon
from tests.data.data_helpers import make_text_cfg, scene_text_dir

SUBSETS = ("ic15_train", "ic15_test", "totaltext_test", "ctw1500_test")
SEEDS = range(6)
SCALE = 0.5  # half-size copies keep the test at a few seconds
MIN_CONTENT_FRACTION = 0.75  # words partly outside the original image legitimately cover some padding
MIN_MASK_PIXELS = 12  # below this the rasterised polygon says nothing reliable


class RecordingCrop(InstancePreservingCrop):
    """The official crop, remembering its last window so that the test knows which words it kept."""

    def get_transform(self, image, boxes):
        self.last = super().get_transform(image, boxes)
        self.last_shape = image.shape[:2]
        return self.last


@pytest.fixture(scope="module")
def half_size_dicts(tmp_path_factory):
    """Every real image at half size without black pixels, and its labels scaled to match.

    ``rec[0]`` of each annotation is replaced by its index so that an output instance names its source.
    """
    root = scene_text_dir()
    out_dir = tmp_path_factory.mktemp("half_size")
    dicts = []
    for subset in SUBSETS:
        for d in load_text_json(str(root / "coco_text" / f"{subset}.json"), str(root / "images" / subset), subset):
            image = cv2.imread(d["file_name"])
            h, w = round(d["height"] * SCALE), round(d["width"] * SCALE)
            small = np.maximum(cv2.resize(image, (w, h), interpolation=cv2.INTER_AREA), 1)
            path = out_dir / f"{subset}_{d['image_id']}.png"
            cv2.imwrite(str(path), small)
            annotations = []
            for i, ann in enumerate(d["annotations"]):
                assert i < 96  # an index must be a valid rec id
                annotations.append(dict(ann, bbox=[v * SCALE for v in ann["bbox"]],
                                        beziers=[v * SCALE for v in ann["beziers"]], rec=[i] + ann["rec"][1:]))
            dicts.append(dict(d, file_name=str(path), height=h, width=w, annotations=annotations))
    return dicts


def _crop_and_rotate_mapper():
    """The official recipe with crop and rotation always on, colour jitter off, small resize."""
    cfg = make_text_cfg()
    cfg.INPUT.TEXT_CROP.PROB = 1.0
    cfg.INPUT.ROTATE.PROB = 1.0
    cfg.INPUT.COLOR_JITTER.ENABLED = False
    cfg.INPUT.MIN_SIZE_TRAIN, cfg.INPUT.MAX_SIZE_TRAIN = (192, 224), 384
    augmentations = build_text_augmentations(cfg, is_train=True)
    c = cfg.INPUT.TEXT_CROP
    crop = RecordingCrop(c.MIN_RATIO, c.MAX_RATIO, c.PROB, c.MAX_TRIES)
    assert isinstance(augmentations[0], InstancePreservingCrop)
    augmentations[0] = crop
    arguments = TextSpottingDatasetMapper.from_config(cfg, is_train=True)
    arguments["augmentations"] = augmentations
    return TextSpottingDatasetMapper(**arguments), crop


def _inside_window(ann, crop) -> bool:
    """The official crop's rule: a word stays when its box overlaps the window with positive area."""
    if isinstance(crop.last, T.CropTransform):
        x0, y0, x1, y1 = crop.last.x0, crop.last.y0, crop.last.x0 + crop.last.w, crop.last.y0 + crop.last.h
    else:  # not cropped: the whole image
        (y1, x1), x0, y0 = crop.last_shape, 0, 0
    bx0, by0, bx1, by1 = ann["bbox"]
    return min(bx1, x1) > max(bx0, x0) and min(by1, y1) > max(by0, y0)


def _content_fraction(beziers, content):
    """Share of the rasterised word polygon that lies on image content; None for tiny polygons."""
    mask = np.zeros(content.shape, np.uint8)
    polygon = bezier_to_polygon(np.asarray(beziers, dtype=np.float64)).reshape(-1, 2)
    cv2.fillPoly(mask, [np.rint(polygon).astype(np.int32)], 1)
    inside = mask.astype(bool)
    return None if inside.sum() < MIN_MASK_PIXELS else float(content[inside].mean())


def test_crop_then_rotation_keeps_only_words_on_image_content(half_size_dicts):
    mapper, crop = _crop_and_rotate_mapper()
    checked, cropped_away, fractions = 0, 0, []
    for seed in SEEDS:
        np.random.seed(seed)
        for d in half_size_dicts:
            out = mapper(d)
            instances = out["instances"]
            content = out["image"].numpy().max(axis=0) > 0
            care = {i: a for i, a in enumerate(d["annotations"]) if not a["iscrowd"]}
            expected = {i for i, a in care.items() if _inside_window(a, crop)}
            cropped_away += len(care) - len(expected)
            kept = sorted(instances.gt_rec[:, 0].tolist())
            where = f"{d['file_name']} seed {seed} crop {crop.last}"
            assert kept == sorted(expected), f"{where}: kept {kept}, inside the crop {sorted(expected)}"
            for beziers in instances.gt_beziers.numpy():
                fraction = _content_fraction(beziers, content)
                if fraction is not None:
                    checked += 1
                    fractions.append(fraction)
                    assert fraction >= MIN_CONTENT_FRACTION, f"{where}: a word lies {1 - fraction:.0%} on padding"
    # the property was exercised: many words checked, and many words were cut away by the crops
    assert checked > 500 and cropped_away > 50, (checked, cropped_away)
    assert np.median(fractions) == 1.0, min(fractions)
