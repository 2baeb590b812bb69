"""Rebuild datasets/icdar2015_samples/ from the real ICDAR2015 test images in ../shared/data/scene_text.

Copies 5 images (img_1 has only don't-care words: an edge case kept on purpose) unmodified, writes the
subset of their COCO-text annotations and an official-format eval GT zip written from those labels
(identical to the members of the official gt_icdar2015.zip for these images). ICDAR2015 is CC BY 4.0;
Total-Text and CTW1500 are non-commercial and must not be copied here.

Usage: python datasets/prepare_icdar2015_samples.py [--shared ../shared]
"""
import argparse
import json
import shutil
from pathlib import Path

from ests_d2.evaluation.gt_zip import DONT_CARE, write_gt_zip

SAMPLE_IMAGE_IDS = (1, 10, 11, 52, 195)
OUT_DIR = Path(__file__).resolve().parent / "icdar2015_samples"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", default=str(Path(__file__).resolve().parents[1] / ".." / "shared"))
    args = parser.parse_args()
    scene_text = Path(args.shared) / "data" / "scene_text"
    with open(scene_text / "coco_text" / "ic15_test.json", encoding="utf-8") as f:
        coco = json.load(f)

    images = [img for img in coco["images"] if img["id"] in SAMPLE_IMAGE_IDS]
    annotations = sorted((a for a in coco["annotations"] if a["image_id"] in SAMPLE_IMAGE_IDS), key=lambda a: a["id"])
    (OUT_DIR / "images").mkdir(parents=True, exist_ok=True)
    for img in images:
        shutil.copyfile(scene_text / "images" / "ic15_test" / img["file_name"], OUT_DIR / "images" / img["file_name"])
    subset = {
        "info": {"description": "ICDAR2015 test images " + ", ".join(f"img_{i}" for i in SAMPLE_IMAGE_IDS)
                 + " (CC BY 4.0, see ATTRIBUTION.md)"},
        "categories": coco["categories"],
        "images": images,
        "annotations": annotations,
    }
    with open(OUT_DIR / "ic15_samples.json", "w", encoding="utf-8") as f:
        json.dump(subset, f)
    gt = {img["id"]: [] for img in images}
    for a in annotations:
        gt[a["image_id"]].append((a["segmentation"][0], DONT_CARE if a["iscrowd"] else a["text"]))
    write_gt_zip(str(OUT_DIR / "gt_icdar2015_samples.zip"), gt)


if __name__ == "__main__":
    main()
