"""``oom.shrink_batch`` on images whose x and y factors differ (rounding makes them differ).

Expected values are worked out by hand: a 20 x 30 (h x w) image shrunk to short side 15 becomes
15 x 22 (30 * 0.75 = 22.5 rounds to 22), so y scales by 15/20 = 0.75 and x by 22/30 = 0.7333...
"""
import pytest
import torch
from detectron2.structures import Boxes, Instances

from ests_d2.engine.oom import shrink_batch


def _item(height, width, box, bezier):
    instances = Instances((height, width))
    instances.gt_boxes = Boxes(torch.tensor([box], dtype=torch.float32))
    instances.gt_beziers = torch.tensor([bezier], dtype=torch.float32)
    instances.gt_classes = torch.tensor([0])
    instances.gt_rec = torch.tensor([[3, 4, 96]])
    image = torch.arange(3 * height * width, dtype=torch.float32).reshape(3, height, width) % 256
    return {"image": image.to(torch.uint8), "height": 720, "width": 1280, "instances": instances}


def test_shrink_batch_scales_x_by_the_width_factor_and_y_by_the_height_factor():
    item = _item(20, 30, [3.0, 4.0, 27.0, 16.0], [30.0, 20.0] * 8)
    (small,) = shrink_batch([item], (24, 15, 10))
    assert small["image"].shape == (3, 15, 22) and small["image"].dtype == torch.uint8
    assert small["instances"].image_size == (15, 22)
    sx, sy = 22 / 30, 15 / 20
    assert torch.allclose(small["instances"].gt_boxes.tensor, torch.tensor([[3 * sx, 4 * sy, 27 * sx, 16 * sy]]))
    assert torch.allclose(small["instances"].gt_beziers, torch.tensor([[22.0, 15.0] * 8]))
    assert small["instances"].gt_rec.tolist() == [[3, 4, 96]]  # size-independent fields are kept
    assert (small["height"], small["width"]) == (720, 1280)  # the original size the results are reported in
    assert item["image"].shape == (3, 20, 30)  # the input is not modified


def test_shrink_batch_shrinks_every_image_by_the_factor_of_the_largest_short_side():
    # short sides 20 and 16: the factor is 15/20 for both images, so the portrait 16 x 26 becomes 12 x 20
    # (26 * 0.75 = 19.5 rounds to 20: x factor 20/26, y factor 12/16)
    landscape = _item(20, 30, [0.0, 0.0, 30.0, 20.0], [30.0, 20.0] * 8)
    portrait = _item(16, 26, [13.0, 8.0, 26.0, 16.0], [26.0, 16.0] * 8)
    shrunk = shrink_batch([landscape, portrait], (15,))
    assert [tuple(d["image"].shape[-2:]) for d in shrunk] == [(15, 22), (12, 20)]
    assert torch.allclose(shrunk[1]["instances"].gt_boxes.tensor,
                          torch.tensor([[13 * 20 / 26, 8 * 12 / 16, 20.0, 12.0]]))
    assert torch.allclose(shrunk[1]["instances"].gt_beziers, torch.tensor([[20.0, 12.0] * 8]))


@pytest.mark.parametrize("size", [(20, 30), (30, 20)])
def test_shrink_batch_keeps_the_image_content_in_place(size):
    # a bright block in the top-left quarter stays in the top-left quarter of the shrunk image
    item = _item(*size, [0.0, 0.0, 1.0, 1.0], [0.0] * 16)
    item["image"] = torch.zeros(3, *size, dtype=torch.uint8)
    item["image"][:, : size[0] // 2, : size[1] // 2] = 200
    (small,) = shrink_batch([item], (10,))
    h, w = small["image"].shape[-2:]
    assert (h, w) == tuple(s // 2 for s in size)
    assert int(small["image"][0, 1, 1]) == 200 and int(small["image"][0, h - 2, w - 2]) == 0
    assert int(small["image"][0, 1, w - 2]) == 0 and int(small["image"][0, h - 2, 1]) == 0


@pytest.mark.parametrize("strip_size,shrunk_size", [((1, 60), (1, 20)), ((60, 1), (20, 1))])
def test_shrink_batch_keeps_at_least_one_pixel_across_a_thin_strip(strip_size, shrunk_size):
    # short sides 30 and 1: factor 10/30, so the strip's 1 px side would round to 0; it keeps 1
    regular = _item(30, 40, [0.0, 0.0, 40.0, 30.0], [40.0, 30.0] * 8)
    strip = _item(*strip_size, [0.0, 0.0, 1.0, 1.0], [1.0, 1.0] * 8)
    shrunk = shrink_batch([regular, strip], (10,))
    assert [tuple(d["image"].shape[-2:]) for d in shrunk] == [(10, 13), shrunk_size]
    assert shrunk[1]["instances"].image_size == shrunk_size
