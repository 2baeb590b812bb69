"""The official ESTS train augmentations as detectron2 ``Augmentation`` / ``Transform`` objects.

Order (spec section 6.2): instance-preserving random crop -> rotation with canvas expansion ->
``ResizeShortestEdge`` -> colour jitter. Every geometric step is a detectron2 ``Transform`` whose
``apply_coords`` maps points exactly like ``apply_image`` maps pixels, so Bezier control points (and any
polygon) follow the image; cubic Bezier curves are affine-invariant, so transforming the control points
transforms the whole curve.
"""
from typing import List

import cv2
import numpy as np
import torchvision.transforms.functional as TF
from detectron2.data import transforms as T
from PIL import Image

__all__ = ["InstancePreservingCrop", "RandomColorJitter", "ColorJitterTransform", "build_text_augmentations"]


class InstancePreservingCrop(T.Augmentation):
    """Random crop that never cuts a text instance (official ``RandomSizeCrop``).

    A window of ``U(min_ratio, max_ratio)`` times each image side is placed uniformly; it is then grown
    until it fully contains every box it overlaps. The boxes it misses are dropped by the mapper by this
    crop's window, not by where later transforms put them: a rotation with canvas expansion would bring
    them back inside the image, on padding. Windows that overlap no box are re-drawn, up to
    ``max_tries`` times; after that the image stays uncropped. Applied with probability ``prob`` and only
    to images with boxes.
    """

    def __init__(self, min_ratio: float = 0.5, max_ratio: float = 1.0, prob: float = 0.5, max_tries: int = 100):
        super().__init__()
        self._init(locals())

    def get_transform(self, image, boxes):
        """``boxes``: (n, 4) XYXY absolute pixels of the training instances."""
        boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        if len(boxes) == 0 or self._rand_range() >= self.prob:
            return T.NoOpTransform()
        h, w = image.shape[:2]
        for _ in range(self.max_tries):
            crop_w = int(w * self._rand_range(self.min_ratio, self.max_ratio))
            crop_h = int(h * self._rand_range(self.min_ratio, self.max_ratio))
            x0 = int(np.random.randint(0, w - crop_w + 1))
            y0 = int(np.random.randint(0, h - crop_h + 1))
            region = self._grow_to_instances(boxes, [x0, y0, x0 + crop_w, y0 + crop_h], w, h)
            if region is not None:
                x0, y0, x1, y1 = region
                return T.CropTransform(x0, y0, x1 - x0, y1 - y0)
        return T.NoOpTransform()

    @staticmethod
    def _grow_to_instances(boxes: np.ndarray, region: List[int], w: int, h: int):
        """Grow ``region`` until every box with positive overlap lies inside it; None if none overlaps.

        Floor / ceil (the official code truncates both and caps at W-1) so that the crop really contains
        each kept box, whose corners are fractional.
        """
        def overlapping(r):
            return (np.minimum(boxes[:, 2], r[2]) > np.maximum(boxes[:, 0], r[0])) & (
                np.minimum(boxes[:, 3], r[3]) > np.maximum(boxes[:, 1], r[1])
            )

        keep = overlapping(region)
        if not keep.any():
            return None
        while True:
            kept = boxes[keep]
            region = [
                min(region[0], int(np.floor(max(kept[:, 0].min(), 0)))),
                min(region[1], int(np.floor(max(kept[:, 1].min(), 0)))),
                max(region[2], int(np.ceil(min(kept[:, 2].max(), w)))),
                max(region[3], int(np.ceil(min(kept[:, 3].max(), h)))),
            ]
            new_keep = overlapping(region)
            if (new_keep == keep).all():
                return region
            keep = new_keep


class ColorJitterTransform(T.Transform):
    """torchvision ``ColorJitter`` with fixed, already sampled factors; geometry is left unchanged."""

    def __init__(self, brightness: float, contrast: float, saturation: float, hue: float, order, image_format: str):
        super().__init__()
        self._set_attributes(locals())

    def apply_image(self, img: np.ndarray) -> np.ndarray:
        rgb = img[:, :, ::-1] if self.image_format == "BGR" else img
        pil = Image.fromarray(np.ascontiguousarray(rgb))
        adjust = {
            0: lambda x: TF.adjust_brightness(x, self.brightness),
            1: lambda x: TF.adjust_contrast(x, self.contrast),
            2: lambda x: TF.adjust_saturation(x, self.saturation),
            3: lambda x: TF.adjust_hue(x, self.hue),
        }
        for op in self.order:
            pil = adjust[int(op)](pil)
        out = np.asarray(pil)
        return np.ascontiguousarray(out[:, :, ::-1]) if self.image_format == "BGR" else out

    def apply_coords(self, coords: np.ndarray) -> np.ndarray:
        return coords

    def apply_segmentation(self, segmentation: np.ndarray) -> np.ndarray:
        return segmentation

    def inverse(self) -> T.Transform:
        return T.NoOpTransform()  # colour changes cannot be undone; geometry is unchanged


class RandomColorJitter(T.Augmentation):
    """torchvision ``ColorJitter(brightness, contrast, saturation, hue)`` applied with probability ``prob``.

    Factors: brightness / contrast / saturation ~ U(1 - s, 1 + s), hue ~ U(-h, h), in a random order.
    Works on RGB or BGR uint8 images (``image_format``).
    """

    def __init__(self, brightness=0.5, contrast=0.5, saturation=0.5, hue=0.5, prob=0.5, image_format="RGB"):
        super().__init__()
        if image_format not in ("RGB", "BGR"):
            raise ValueError(f"colour jitter needs an RGB or BGR image, INPUT.FORMAT is '{image_format}'")
        if not 0 <= hue <= 0.5:
            raise ValueError(f"INPUT.COLOR_JITTER.HUE must lie in [0, 0.5], got {hue}")
        self._init(locals())

    def get_transform(self, image):
        if self._rand_range() >= self.prob:
            return T.NoOpTransform()
        return ColorJitterTransform(
            brightness=self._rand_range(max(0.0, 1 - self.brightness), 1 + self.brightness),
            contrast=self._rand_range(max(0.0, 1 - self.contrast), 1 + self.contrast),
            saturation=self._rand_range(max(0.0, 1 - self.saturation), 1 + self.saturation),
            hue=self._rand_range(-self.hue, self.hue),
            order=np.random.permutation(4).tolist(),
            image_format=self.image_format,
        )


def build_text_augmentations(cfg, is_train: bool) -> List[T.Augmentation]:
    """The official recipe from the config (train), or the test resize."""
    if not is_train:
        return [T.ResizeShortestEdge(cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST, "choice")]
    augs = []
    if cfg.INPUT.TEXT_CROP.ENABLED:
        c = cfg.INPUT.TEXT_CROP
        augs.append(InstancePreservingCrop(c.MIN_RATIO, c.MAX_RATIO, c.PROB, c.MAX_TRIES))
    if cfg.INPUT.ROTATE.ENABLED:
        r = cfg.INPUT.ROTATE
        # PIL rotate(expand=True, NEAREST) in the official code; detectron2's RotationTransform maps image
        # and points with the same matrix, so the official sub-pixel centre mismatch does not appear.
        rotation = T.RandomRotation([-r.ANGLE, r.ANGLE], expand=True, sample_style="range", interp=cv2.INTER_NEAREST)
        augs.append(T.RandomApply(rotation, prob=r.PROB))
    augs.append(
        T.ResizeShortestEdge(cfg.INPUT.MIN_SIZE_TRAIN, cfg.INPUT.MAX_SIZE_TRAIN, cfg.INPUT.MIN_SIZE_TRAIN_SAMPLING)
    )
    if cfg.INPUT.COLOR_JITTER.ENABLED:
        j = cfg.INPUT.COLOR_JITTER
        augs.append(RandomColorJitter(j.BRIGHTNESS, j.CONTRAST, j.SATURATION, j.HUE, j.PROB, cfg.INPUT.FORMAT))
    return augs
