"""Register prepared datasets: every ``ests_datasets.json`` manifest written by ``tools/prepare_dataset.py``
under ``$DETECTRON2_DATASETS`` (the root itself and its direct sub-folders) becomes detectron2 datasets by the
names it lists, so that ``DATASETS.TRAIN ("my_train",)`` works right after preparing (lazily: nothing but the
small manifests is read until a dataset is used)."""
import glob
import json
import logging
import os
from typing import List

from detectron2.data import DatasetCatalog

from ..datasets import register_text_instances
logger = logging.getLogger(__name__)

MANIFEST_NAME = "ests_datasets.json"  # one per output folder, written by ``writers.update_manifest``


def register_manifest(manifest_path: str) -> List[str]:
    """Register the datasets of one manifest (names already registered are left alone); returns the new names."""
    folder = os.path.dirname(os.path.abspath(manifest_path))
    try:
        with open(manifest_path, encoding="utf-8") as f:
            datasets = json.load(f)["datasets"]
    except (OSError, ValueError, KeyError) as e:
        raise ValueError(f"{manifest_path}: not a prepared-dataset manifest ({e})") from e

    def resolve(p):
        return os.path.normpath(os.path.join(folder, p)) if p else ""

    names = []
    for name, entry in datasets.items():
        if name in DatasetCatalog.list():
            continue
        register_text_instances(name, resolve(entry["json_file"]), resolve(entry["image_root"]),
                                eval_protocol=entry.get("eval_protocol", "generic"),
                                eval_gt_zip=resolve(entry.get("eval_gt_zip", "")),
                                voc_size=int(entry.get("voc_size", 97)))
        names.append(name)
    return names


def register_prepared_datasets(root: str) -> List[str]:
    """Register the manifests in ``root`` and its direct sub-folders; a broken manifest is logged and skipped
    (it must not stop every other dataset from loading)."""
    names = []
    manifests = glob.glob(os.path.join(root, MANIFEST_NAME)) + glob.glob(os.path.join(root, "*", MANIFEST_NAME))
    for manifest in sorted(manifests):
        try:
            names += register_manifest(manifest)
        except ValueError as e:
            logger.warning(str(e))
    return names
