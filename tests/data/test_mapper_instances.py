"""``TextSpottingDatasetMapper.annotations_to_instances`` and its crop rule on hand-made transforms: no image,
no randomness, every expected number worked out by hand. Found by mutation testing (docs/MUTATION.md)."""
import numpy as np
import torch
from detectron2.data import transforms as T

from ests_d2.data import TextSpottingDatasetMapper
from ests_d2.data.dataset_mapper import _kept_by_crops


def _mapper(max_text_len=4, pad_id=9):
    return TextSpottingDatasetMapper(True, augmentations=[], image_format="RGB", max_text_len=max_text_len,
                                     pad_id=pad_id)


def _annotation(x0, y0, x1, y1, rec, category_id=0):
    """A straight word: top edge left to right, bottom edge right to left, as the dataset format has it."""
    xs = np.linspace(x0, x1, 4)
    top = [v for x in xs for v in (x, y0)]
    bottom = [v for x in xs[::-1] for v in (x, y1)]
    return {"bbox": [x0, y0, x1, y1], "beziers": top + bottom, "rec": rec, "category_id": category_id}


def test_crop_keeps_boxes_that_keep_a_positive_area_inside_its_window():
    boxes = np.array([
        [20.0, 20, 30, 30],  # inside
        [0.0, 20, 10, 30],  # ends where the window starts (x 10): no area inside, dropped
        [5.0, 20, 15, 30],  # half inside: kept
        [20.0, 0, 30, 10],  # ends where the window starts (y 10): dropped
        [20.0, 59, 30, 70],  # one pixel row inside (window ends at y 60): kept
        [0.0, 40, 10.5, 50],  # half a pixel inside: kept
    ])
    crop = T.TransformList([T.CropTransform(10, 10, 40, 50)])  # window x 10..50, y 10..60
    assert _kept_by_crops(boxes, crop).tolist() == [True, False, True, False, True, True]


def test_each_crop_judges_the_boxes_where_it_applies():
    boxes = np.array([[12.0, 0, 14, 5], [20.0, 0, 24, 5]])
    # the second crop's window (x 5..25) is in the coordinates the first crop (x 10..60) left behind:
    # box 0 sits at x 2..4 there and is cut away, box 1 at x 10..14 stays
    crops = T.TransformList([T.CropTransform(10, 0, 50, 20), T.CropTransform(5, 0, 20, 20)])
    assert _kept_by_crops(boxes, crops).tolist() == [False, True]
    assert _kept_by_crops(boxes, T.TransformList([T.HFlipTransform(100)])).tolist() == [True, True]


def test_instances_carry_the_transformed_geometry_and_the_fitted_text():
    annotations = [_annotation(10, 10, 40, 20, [1, 2], category_id=0),
                   _annotation(50, 30, 95, 40, [3, 4, 5, 6, 7, 8], category_id=2)]
    boxes = np.array([a["bbox"] for a in annotations], dtype=np.float64)
    transforms = T.TransformList([T.ScaleTransform(50, 100, 100, 200)])  # x 2, y 2; image 100 x 200 (h x w)
    instances = _mapper().annotations_to_instances(annotations, boxes, transforms, (100, 200))
    assert instances.image_size == (100, 200)
    torch.testing.assert_close(instances.gt_boxes.tensor, torch.tensor([[20.0, 20, 80, 40], [100, 60, 190, 80]]))
    expected = torch.tensor([a["beziers"] for a in annotations], dtype=torch.float32) * 2
    torch.testing.assert_close(instances.gt_beziers, expected)
    assert instances.gt_beziers.dtype == torch.float32
    assert instances.gt_classes.tolist() == [0, 2] and instances.gt_classes.dtype == torch.int64
    assert instances.gt_rec.tolist() == [[1, 2, 9, 9], [3, 4, 5, 6]]  # padded with pad_id / cut at T = 4
    assert instances.gt_rec.dtype == torch.int64


def test_boxes_are_clipped_to_the_image_and_empty_ones_dropped():
    annotations = [_annotation(-10, 10, 30, 20, [1]),  # sticks out on the left
                   _annotation(60, 10, 90, 20, [2]),  # wholly right of the 50-pixel-wide image
                   _annotation(10, 30, 20, 45, [3])]  # crosses the bottom edge
    boxes = np.array([a["bbox"] for a in annotations], dtype=np.float64)
    instances = _mapper().annotations_to_instances(annotations, boxes, T.TransformList([]), (40, 50))
    assert instances.gt_rec[:, 0].tolist() == [1, 3]
    torch.testing.assert_close(instances.gt_boxes.tensor, torch.tensor([[0.0, 10, 30, 20], [10, 30, 20, 40]]))


def test_after_a_rotation_the_box_is_the_extent_of_the_sampled_curves():
    annotation = _annotation(10, 10, 30, 20, [1])
    # a control polygon bulging upwards: the curve's extent (y 5.5) lies inside the control points' (y 4)
    annotation["beziers"][3] = annotation["beziers"][5] = 4.0
    boxes = np.array([annotation["bbox"]], dtype=np.float64)
    rotation = T.RotationTransform(100, 100, angle=0.0, expand=False)  # the identity, but a rotation
    instances = _mapper().annotations_to_instances([annotation], boxes, T.TransformList([rotation]), (100, 100))
    # top curve: y(t) = 10 ((1-t)^3 + t^3) + 3 * 4 t (1-t), smallest of the 8 samples at t = 3/7 and 4/7:
    # 10 * 91 / 343 + 12 * 12 / 49 = 1918 / 343 = 5.5918; the bottom edge stays at y 20, x spans 10..30
    torch.testing.assert_close(instances.gt_boxes.tensor, torch.tensor([[10.0, 1918 / 343, 30, 20]]), atol=1e-4,
                               rtol=0)


def test_an_image_without_annotations_gives_empty_fields_of_the_contract_dtypes():
    instances = _mapper().annotations_to_instances([], np.zeros((0, 4)), T.TransformList([]), (40, 50))
    assert len(instances) == 0
    # an empty float gt_classes would turn the labels of the whole batch into floats in the criterion
    assert instances.gt_classes.dtype == torch.int64 and instances.gt_rec.dtype == torch.int64
    assert instances.gt_beziers.shape == (0, 16) and instances.gt_rec.shape == (0, 4)

