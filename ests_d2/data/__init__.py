"""Text-spotting data: dataset registration, COCO-text loading, augmentations, the mapper, synthetic data.

Importing this package registers the built-in datasets (lazily, see ``datasets.py``) and the prepared ones
(``preparation/registry.py``).
"""
from .augmentation import ColorJitterTransform, InstancePreservingCrop, RandomColorJitter, build_text_augmentations
from .dataset_mapper import TextSpottingDatasetMapper
from .datasets import datasets_root, register_all_text_datasets, register_text_instances
from .image_io import ImageReadError, read_text_image
from .preparation.registry import register_prepared_datasets
from .synthetic import ensure_synthetic_text
from .text_json import TextAnnotationError, load_text_json

__all__ = [
    "ColorJitterTransform",
    "ImageReadError",
    "InstancePreservingCrop",
    "RandomColorJitter",
    "TextAnnotationError",
    "TextSpottingDatasetMapper",
    "build_text_augmentations",
    "datasets_root",
    "ensure_synthetic_text",
    "load_text_json",
    "read_text_image",
    "register_all_text_datasets",
    "register_prepared_datasets",
    "register_text_instances",
]

register_all_text_datasets(datasets_root())
register_prepared_datasets(datasets_root())  # what tools/prepare_dataset.py wrote there
