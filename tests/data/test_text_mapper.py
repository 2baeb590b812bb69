"""The train/test mapper and the official augmentations, on real images where possible."""
import cv2
import numpy as np
import pytest
import torch
from detectron2.data import DatasetCatalog, build_detection_train_loader
from detectron2.data import transforms as T
from detectron2.data.build import filter_images_with_only_crowd_annotations

from ests_d2.data import TextSpottingDatasetMapper
from ests_d2.data.augmentation import ColorJitterTransform, InstancePreservingCrop
from ests_d2.data.text_json import load_text_json
from ests_d2.structures import bezier_to_polygon
from tests.data.data_helpers import make_text_cfg, scene_text_dir


def _real_dicts():
    root = scene_text_dir()
    dicts = []
    for subset in ("totaltext_test", "ctw1500_test", "ic15_test"):
        dicts += load_text_json(str(root / "coco_text" / f"{subset}.json"), str(root / "images" / subset), subset)
    return dicts


def _polygon_mask(beziers, shape):
    """Rasterised 16-point boundary of one instance."""
    mask = np.zeros(shape, np.uint8)
    pts = bezier_to_polygon(np.asarray(beziers, dtype=np.float64)).reshape(-1, 2)
    cv2.fillPoly(mask, [np.rint(pts).astype(np.int32)], 1)
    return mask


def _crop_window(transforms, shape):
    """The crop's window (x0, y0, x1, y1) in the original image; the whole image when there is no crop."""
    crop = next((t for t in transforms if isinstance(t, T.CropTransform)), None)
    if crop is None:
        return 0, 0, shape[1], shape[0]
    return crop.x0, crop.y0, crop.x0 + crop.w, crop.y0 + crop.h


def _iou(a, b):
    return (a & b).sum() / max((a | b).sum(), 1)


@pytest.mark.parametrize("seed", range(4))
def test_augmented_targets_stay_on_the_text(seed):
    """Warp a rendered polygon mask with the sampled transforms; it must match the transformed labels."""
    cfg = make_text_cfg()
    for aug in (cfg.INPUT.TEXT_CROP, cfg.INPUT.ROTATE, cfg.INPUT.COLOR_JITTER):
        aug.PROB = 1.0  # exercise every step
    mapper = TextSpottingDatasetMapper(cfg, is_train=True)
    dicts = [d for d in _real_dicts() if d["image_id"] in (177, 1019, 10, 195)]
    np.random.seed(seed)
    ious = []
    for d in dicts:
        anns = [a for a in d["annotations"] if not a["iscrowd"]]
        image = cv2.imread(d["file_name"])[:, :, ::-1]
        boxes = np.array([a["bbox"] for a in anns])
        aug_input = T.AugInput(image, boxes=boxes)
        transforms = mapper.augmentations(aug_input)
        assert any(isinstance(t, T.RotationTransform) for t in transforms)
        instances = mapper.annotations_to_instances(anns, boxes, transforms, aug_input.image.shape[:2])
        assert instances.image_size == aug_input.image.shape[:2]
        h, w = instances.image_size
        window = _crop_window(transforms, image.shape[:2])
        expected = []
        for ann in anns:
            new_beziers = transforms.apply_coords(np.asarray(ann["beziers"]).reshape(-1, 2)).reshape(-1)
            warped = transforms.apply_segmentation(_polygon_mask(ann["beziers"], image.shape[:2]))
            x0, y0, x1, y1 = ann["bbox"]
            if x1 <= window[0] or y1 <= window[1] or x0 >= window[2] or y0 >= window[3]:
                # cropped away: at most the pixels its rasterised outline has at the window's edge are left
                assert warped.sum() <= 0.05 * _polygon_mask(new_beziers, warped.shape).sum()
                continue
            expected.append(new_beziers)
            if warped.sum() >= 400:  # rasterisation error dominates tiny masks
                ious.append(_iou(warped.astype(bool), _polygon_mask(new_beziers, warped.shape).astype(bool)))
        np.testing.assert_allclose(instances.gt_beziers.numpy(), np.array(expected).reshape(-1, 16), atol=1e-3)
        boxes_out = instances.gt_boxes.tensor.numpy()
        points = bezier_to_polygon(instances.gt_beziers.double().numpy()).reshape(len(instances), -1, 2)
        # boxes after rotation are the extent of the sampled polygon (clipped to the image)
        np.testing.assert_allclose(boxes_out[:, :2], np.maximum(points.min(axis=1), 0), atol=1e-3)
        np.testing.assert_allclose(boxes_out[:, 2:], np.minimum(points.max(axis=1), [w, h]), atol=1e-3)
    assert len(ious) >= 10
    assert min(ious) > 0.8 and np.mean(ious) > 0.9, ious


def test_crop_never_cuts_an_instance():
    dicts = [d for d in _real_dicts() if d["image_id"] in (177, 10, 195, 52)]
    crop = InstancePreservingCrop(0.5, 1.0, prob=1.0)
    np.random.seed(0)
    cropped = 0
    for d in dicts:
        boxes = np.array([a["bbox"] for a in d["annotations"] if not a["iscrowd"]])
        image = np.zeros((d["height"], d["width"], 3), np.uint8)
        for _ in range(25):
            t = crop.get_transform(image, boxes)
            if isinstance(t, T.NoOpTransform):
                continue
            cropped += 1
            x0, y0, x1, y1 = t.x0, t.y0, t.x0 + t.w, t.y0 + t.h
            inside = (boxes[:, 0] >= x0) & (boxes[:, 1] >= y0) & (boxes[:, 2] <= x1) & (boxes[:, 3] <= y1)
            outside = (boxes[:, 2] <= x0) | (boxes[:, 0] >= x1) | (boxes[:, 3] <= y0) | (boxes[:, 1] >= y1)
            assert (inside | outside).all() and inside.any()
    assert cropped > 50


def test_crop_grows_through_chains_of_boxes():
    boxes = np.array([[40.0, 10, 60, 20], [55, 15, 90, 25], [85.5, 20, 120.2, 30], [300, 300, 310, 310]])
    region = InstancePreservingCrop._grow_to_instances(boxes, [0, 0, 45, 50], 400, 400)
    assert region == [0, 0, 121, 50]  # 1st box pulls in the 2nd, which pulls in the 3rd; the 4th is apart
    assert InstancePreservingCrop._grow_to_instances(boxes, [200, 200, 250, 250], 400, 400) is None


@pytest.mark.parametrize(
    "size_hw, min_size, max_size, expected_hw",
    [
        ((1200, 1600), 800, 1333, (800, 1067)),  # short side 800: 1600 * 800 / 1200 = 1066.7 -> 1067
        ((400, 1600), 800, 1600, (400, 1600)),  # 3200 would exceed MAX_SIZE: long side capped at 1600
        ((720, 1280), 640, 1600, (640, 1138)),
    ],
)
def test_resize_is_exactly_resize_shortest_edge(tmp_path, size_hw, min_size, max_size, expected_hw):
    path = tmp_path / "big.jpg"
    cv2.imwrite(str(path), np.zeros((*size_hw, 3), np.uint8))
    cfg = make_text_cfg()
    cfg.INPUT.MIN_SIZE_TRAIN, cfg.INPUT.MAX_SIZE_TRAIN = (min_size,), max_size
    cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST = min_size, max_size
    for section in (cfg.INPUT.TEXT_CROP, cfg.INPUT.ROTATE, cfg.INPUT.COLOR_JITTER):
        section.ENABLED = False
    h, w = size_hw
    beziers = [w * 0.1, h * 0.1, w * 0.2, h * 0.1, w * 0.3, h * 0.1, w * 0.4, h * 0.1,
               w * 0.4, h * 0.2, w * 0.3, h * 0.2, w * 0.2, h * 0.2, w * 0.1, h * 0.2]
    ann = {"bbox": [w * 0.1, h * 0.1, w * 0.4, h * 0.2], "bbox_mode": 0, "category_id": 0, "beziers": beziers,
           "rec": [33] + [96] * 24, "iscrowd": 0}
    record = {"file_name": str(path), "image_id": 1, "height": h, "width": w, "annotations": [ann]}
    train = TextSpottingDatasetMapper(cfg, is_train=True)(record)
    test = TextSpottingDatasetMapper(cfg, is_train=False)({k: v for k, v in record.items() if k != "annotations"})
    for out in (train, test):
        assert tuple(out["image"].shape[1:]) == expected_hw
        assert (out["height"], out["width"]) == (h, w)  # the original size, for rescaling predictions
    scale = np.array([expected_hw[1] / w, expected_hw[0] / h] * 8)
    np.testing.assert_allclose(train["instances"].gt_beziers[0].numpy(), np.array(beziers) * scale, rtol=1e-5)
    np.testing.assert_allclose(train["instances"].gt_boxes.tensor[0].numpy(),
                               np.array(ann["bbox"]) * scale[:4], rtol=1e-5)


def test_mapper_output_follows_the_contract():
    cfg = make_text_cfg()
    cfg.MODEL.ESTS.MAX_TEXT_LEN = 10  # the loader pads to 25; the mapper re-fits to the config
    mapper = TextSpottingDatasetMapper(cfg, is_train=True)
    d = next(d for d in DatasetCatalog.get("icdar2015_samples") if d["image_id"] == 195)
    np.random.seed(1)
    out = mapper(d)
    inst = out["instances"]
    assert out["image"].dtype == torch.uint8 and out["image"].shape[0] == 3
    assert inst.image_size == tuple(out["image"].shape[1:])
    assert inst.gt_classes.dtype == torch.int64 and (inst.gt_classes == 0).all()
    assert inst.gt_beziers.dtype == torch.float32 and inst.gt_beziers.shape == (len(inst), 16)
    assert inst.gt_rec.dtype == torch.int64 and inst.gt_rec.shape == (len(inst), 10)
    n_care = sum(1 for a in d["annotations"] if not a["iscrowd"])
    assert len(inst) == n_care  # the crop keeps whole instances; don't-care ones are never targets
    assert "annotations" in d  # the input dict is left untouched


def test_all_dont_care_images():
    cfg = make_text_cfg()
    dicts = DatasetCatalog.get("icdar2015_samples")
    dont_care = next(d for d in dicts if d["image_id"] == 1)
    assert all(a["iscrowd"] for a in dont_care["annotations"])
    # detectron2's default FILTER_EMPTY_ANNOTATIONS removes it from training ...
    assert dont_care not in filter_images_with_only_crowd_annotations(list(dicts))
    # ... if the train mapper gets it anyway, it yields the image with no target (never None) ...
    out = TextSpottingDatasetMapper(cfg, is_train=True)(dont_care)
    assert len(out["instances"]) == 0 and out["instances"].gt_rec.shape == (0, 25)
    # ... and it is evaluated like any other image.
    out = TextSpottingDatasetMapper(cfg, is_train=False)(dont_care)
    assert tuple(out["image"].shape[1:]) == (288, 512) and "instances" not in out

    # A detectron2 train loader over the unfiltered list runs, and only image 1 has no target.
    mapper = TextSpottingDatasetMapper(cfg, is_train=True)
    loader = build_detection_train_loader(dataset=list(dicts), mapper=mapper, total_batch_size=2, num_workers=0)
    seen = set()
    for i, batch in enumerate(loader):
        for x in batch:
            seen.add(x["image_id"])
            assert (len(x["instances"]) == 0) == (x["image_id"] == 1)
        if i == 10:
            break
    assert len(seen) >= 4


def test_retries_then_falls_back_to_resize_only(tmp_path):
    """An instance lying outside the image can never survive; the mapper still returns a resized image."""
    cfg = make_text_cfg()
    path = tmp_path / "a.jpg"
    cv2.imwrite(str(path), np.zeros((100, 200, 3), np.uint8))
    beziers = [300.0, 10, 310, 10, 320, 10, 330, 10, 330, 20, 320, 20, 310, 20, 300, 20]
    ann = {"bbox": [300.0, 10, 330, 20], "bbox_mode": 0, "category_id": 0, "beziers": beziers,
           "rec": [33] * 25, "iscrowd": 0}
    record = {"file_name": str(path), "image_id": 1, "height": 100, "width": 200, "annotations": [ann]}
    out = TextSpottingDatasetMapper(cfg, is_train=True)(record)
    assert len(out["instances"]) == 0
    assert out["image"].shape[1] in cfg.INPUT.MIN_SIZE_TRAIN and out["image"].shape[2] == 2 * out["image"].shape[1]


def test_color_jitter_is_format_aware_and_keeps_geometry():
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (32, 48, 3), dtype=np.uint8)
    kwargs = dict(brightness=1.3, contrast=0.7, saturation=1.4, hue=0.2, order=[3, 0, 2, 1])
    out_rgb = ColorJitterTransform(image_format="RGB", **kwargs).apply_image(rgb)
    out_bgr = ColorJitterTransform(image_format="BGR", **kwargs).apply_image(np.ascontiguousarray(rgb[:, :, ::-1]))
    np.testing.assert_array_equal(out_rgb, out_bgr[:, :, ::-1])
    assert not np.array_equal(out_rgb, rgb)
    coords = rng.uniform(0, 40, (5, 2))
    np.testing.assert_array_equal(ColorJitterTransform(image_format="RGB", **kwargs).apply_coords(coords), coords)


def test_vocabulary_mismatch_is_reported(tmp_path):
    custom_dict = tmp_path / "chars.txt"
    custom_dict.write_text("".join(chr(c) + "\n" for c in range(32, 127)) + "\u00e9\n", encoding="utf-8")
    cfg = make_text_cfg()
    cfg.DATASETS.TRAIN = ("icdar2015_samples",)
    cfg.MODEL.ESTS.VOC_SIZE = 98
    cfg.MODEL.ESTS.CUSTOM_DICT = str(custom_dict)
    with pytest.raises(ValueError, match="dataset 'icdar2015_samples' has rec ids for voc_size 97"):
        TextSpottingDatasetMapper(cfg, is_train=True)


def test_padding_id_mismatch_is_reported():
    from detectron2.data import MetadataCatalog

    name = "mapper_vintext_padding_check"
    MetadataCatalog.get(name).set(voc_size=107, rec_pad_id=106)  # padded with the last id, not VinText's 105
    cfg = make_text_cfg()
    cfg.DATASETS.TRAIN = (name,)
    cfg.MODEL.ESTS.VOC_SIZE = 107
    cfg.MODEL.ESTS.VOCABULARY = "vintext"
    with pytest.raises(ValueError, match=f"dataset '{name}' pads rec with id 106 but the vintext vocabulary pads "
                                         "with 105"):
        TextSpottingDatasetMapper(cfg, is_train=True)
