"""Dataset dict -> model input for ESTS (train and test), per the mapper contract in docs/ARCHITECTURE.md.

Images left without any training instance. The official loader replaces them by a random other image.
detectron2's equivalent -- returning None so that ``MapDataset`` maps a random other index -- crashes
in 0.6 on Python >= 3.11 (``random.sample`` on a set), so the mapper never returns None: it re-draws
the random augmentations up to ``max_retries`` times, then falls back to the resize alone (no crop,
no rotation, no colour change). An image that has no training instance at all (only don't-care words)
therefore comes out with empty ``instances``; detectron2's default ``DATALOADER.FILTER_EMPTY_ANNOTATIONS``
removes such images from training before they reach the mapper.
"""
import logging
from typing import Dict, List, Optional

import numpy as np
import torch
from detectron2.config import configurable
from detectron2.data import MetadataCatalog
from detectron2.data import detection_utils as utils
from detectron2.data import transforms as T
from detectron2.structures import BoxMode, Boxes, Instances

from .augmentation import build_text_augmentations
from .image_io import read_text_image
from ests_d2.structures import bezier_to_polygon, build_vocabulary

__all__ = ["TextSpottingDatasetMapper"]


class TextSpottingDatasetMapper:
    """Read the image, apply the augmentations to image and Bezier control points, build ``Instances``.

    Train output: ``{"image": uint8 (3, H, W), "height", "width", "image_id", "file_name",
    "instances": Instances(gt_boxes, gt_classes, gt_beziers (n, 16), gt_rec (n, T))}``.
    Test output: the same without ``instances``; ``height``/``width`` stay the original size so that
    predictions are rescaled to it.
    """

    @configurable
    def __init__(
        self,
        is_train: bool,
        *,
        augmentations: List[T.Augmentation],
        fallback_augmentations: Optional[List[T.Augmentation]] = None,
        max_retries: int = 10,
        image_format: str,
        max_text_len: int,
        pad_id: int,
    ):
        """
        Args:
            is_train: training (targets, random augmentations) or inference (resize only).
            augmentations: applied in order; at train time they receive ``boxes`` (n, 4) XYXY.
            fallback_augmentations: used (train only) when ``max_retries`` draws of ``augmentations`` all
                left no instance; default: the ``ResizeShortestEdge`` steps of ``augmentations``.
            max_retries: draws of ``augmentations`` before falling back.
            image_format: ``INPUT.FORMAT`` (e.g. "RGB").
            max_text_len: recognition slots T; ``rec`` is truncated / padded to it.
            pad_id: padding class id used for that padding.
        """
        self.is_train = is_train
        self.augmentations = T.AugmentationList(augmentations)
        if fallback_augmentations is None:
            fallback_augmentations = [a for a in augmentations if isinstance(a, T.ResizeShortestEdge)]
        self.fallback_augmentations = T.AugmentationList(fallback_augmentations)
        self.max_retries = max_retries
        self.image_format = image_format
        self.max_text_len = max_text_len
        self.pad_id = pad_id
        mode = "training" if is_train else "inference"
        logging.getLogger(__name__).info(f"[TextSpottingDatasetMapper] augmentations in {mode}: {augmentations}")

    @classmethod
    def from_config(cls, cfg, is_train: bool = True) -> Dict:
        vocab = build_vocabulary(cfg)
        for name in cfg.DATASETS.TRAIN if is_train else cfg.DATASETS.TEST:
            meta = MetadataCatalog.get(name)
            voc_size = meta.get("voc_size", None)
            if voc_size is not None and voc_size != vocab.num_classes:
                raise ValueError(
                    f"dataset '{name}' has rec ids for voc_size {voc_size} but MODEL.ESTS.VOC_SIZE is "
                    f"{vocab.num_classes}"
                )
            pad_id = meta.get("rec_pad_id", None)
            if pad_id is not None and pad_id != vocab.pad_id:
                raise ValueError(f"dataset '{name}' pads rec with id {pad_id} but the {vocab.kind} vocabulary "
                                 f"pads with {vocab.pad_id} (MODEL.ESTS.VOCABULARY / the dataset's rec_pad_id)")
        return {
            "is_train": is_train,
            "augmentations": build_text_augmentations(cfg, is_train),
            "image_format": cfg.INPUT.FORMAT,
            "max_text_len": cfg.MODEL.ESTS.MAX_TEXT_LEN,
            "pad_id": vocab.pad_id,
        }

    def __call__(self, dataset_dict: Dict) -> Dict:
        dataset_dict = dict(dataset_dict)  # shallow: annotations are only read, never modified
        image = read_text_image(dataset_dict["file_name"], self.image_format)
        utils.check_image_size(dataset_dict, image)
        annotations = dataset_dict.pop("annotations", [])

        if not self.is_train:
            aug_input = T.AugInput(image)
            self.augmentations(aug_input)
            dataset_dict["image"] = _to_chw_tensor(aug_input.image)
            return dataset_dict

        # Don't-care instances are never training targets (the official loader drops iscrowd == 1).
        annotations = [a for a in annotations if not a.get("iscrowd", 0)]
        boxes = np.array(
            [BoxMode.convert(a["bbox"], a["bbox_mode"], BoxMode.XYXY_ABS) for a in annotations], dtype=np.float64
        ).reshape(-1, 4)
        for attempt in range(self.max_retries + 1):
            augmentations = self.augmentations if attempt < self.max_retries else self.fallback_augmentations
            aug_input = T.AugInput(image, boxes=boxes)
            transforms = augmentations(aug_input)
            instances = self.annotations_to_instances(annotations, boxes, transforms, aug_input.image.shape[:2])
            if len(instances) > 0 or not annotations:  # nothing to keep: no point in re-drawing
                break
        dataset_dict["image"] = _to_chw_tensor(aug_input.image)
        dataset_dict["instances"] = instances
        return dataset_dict

    def annotations_to_instances(self, annotations, boxes, transforms, image_size) -> Instances:
        """Transform control points and boxes; drop instances that a crop cut away or that left the image.

        Cropped-away instances are dropped by the crop's own rule (official ``crop``), not by their final
        position: a rotation with canvas expansion after the crop can bring them back inside the image, on
        padding, where they would be trained on as text.

        After a rotation the box is recomputed as the extent of the 16 points sampled from the
        transformed curves (official ``RandomRotate``); otherwise the annotated box is transformed.
        """
        n = len(annotations)
        kept_by_crops = torch.as_tensor(_kept_by_crops(boxes, transforms))
        beziers = np.array([a["beziers"] for a in annotations], dtype=np.float64).reshape(n, 16)
        beziers = transforms.apply_coords(beziers.reshape(-1, 2)).reshape(n, 16)
        if any(isinstance(t, T.RotationTransform) for t in transforms):
            points = bezier_to_polygon(beziers).reshape(n, 16, 2)
            boxes = np.concatenate([points.min(axis=1), points.max(axis=1)], axis=1)
        else:
            boxes = transforms.apply_box(boxes)
        rec = np.full((n, self.max_text_len), self.pad_id, dtype=np.int64)
        for i, a in enumerate(annotations):
            ids = a["rec"][: self.max_text_len]
            rec[i, : len(ids)] = ids

        instances = Instances(image_size)
        gt_boxes = Boxes(torch.as_tensor(boxes, dtype=torch.float32).reshape(n, 4))
        gt_boxes.clip(image_size)
        instances.gt_boxes = gt_boxes
        instances.gt_classes = torch.as_tensor([a["category_id"] for a in annotations], dtype=torch.int64)
        instances.gt_beziers = torch.as_tensor(beziers, dtype=torch.float32)
        instances.gt_rec = torch.as_tensor(rec)
        return instances[gt_boxes.nonempty() & kept_by_crops]


def _kept_by_crops(boxes: np.ndarray, transforms: T.TransformList) -> np.ndarray:
    """(n,) bool: the instances that every crop in ``transforms`` keeps, each judged where that crop applies.

    The official rule: a box stays when, clipped to the crop window, it keeps a positive area.
    ``InstancePreservingCrop`` grows its window around every box it overlaps, so the kept boxes are whole.
    """
    keep = np.ones(len(boxes), dtype=bool)
    for transform in transforms.transforms:
        if isinstance(transform, T.CropTransform):
            cropped = transform.apply_box(boxes).clip(0, [transform.w, transform.h, transform.w, transform.h])
            keep &= (cropped[:, 2] > cropped[:, 0]) & (cropped[:, 3] > cropped[:, 1])
        boxes = transform.apply_box(boxes)
    return keep


def _to_chw_tensor(image: np.ndarray) -> torch.Tensor:
    return torch.as_tensor(np.ascontiguousarray(image.transpose(2, 0, 1)))
