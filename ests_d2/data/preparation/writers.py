"""Write a prepared dataset: the COCO-text json the loader reads, the evaluation GT zip, the dataset manifest
that ``registry`` registers from, and the summary (text for the terminal, json beside the dataset)."""
import json
import os
from typing import Dict, Optional

import numpy as np

from ests_d2.evaluation.gt_zip import write_gt_zip
from ests_d2.structures import CharVocabulary

from .prepare import PreparedDataset
from .registry import MANIFEST_NAME

_PERCENTILES = (50, 90, 99, 100)


def write_coco_json(path: str, result: PreparedDataset, name: str, vocab: CharVocabulary, max_text_len: int,
                    custom_dict: str = "") -> None:
    """The COCO-text json: ``images``, ``annotations`` (see ``prepare._annotation``), ``categories`` and an
    ``info`` that records the vocabulary the ``rec`` ids were encoded with."""
    voc = (f"voc_size {vocab.num_classes}: {len(vocab.characters)} characters "
           f"({'from ' + os.path.basename(custom_dict) if custom_dict else 'printable ASCII 32..126'}), "
           f"rec id {vocab.unknown_id} = unknown, {vocab.pad_id} = padding; max_len {max_text_len}")
    coco = {
        "info": {"description": f"{name}: prepared by tools/prepare_dataset.py (Bezier fit of the native "
                                f"polygons)", "voc": voc, "voc_size": vocab.num_classes},
        "licenses": [],
        "categories": [{"id": 1, "name": "text", "supercategory": "text"}],
        "images": result.images,
        "annotations": result.annotations,
    }
    _makedirs_for(path)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(coco, f, ensure_ascii=False)


def write_eval_gt(path: str, result: PreparedDataset) -> None:
    """The official evaluation GT zip (member ``{image_id:07d}.txt`` per image, ``###`` = don't care)."""
    _makedirs_for(path)
    write_gt_zip(path, result.gt_by_image)


def update_manifest(out_dir: str, name: str, json_file: str, image_root: str, eval_protocol: str,
                    voc_size: int, eval_gt_zip: str = "") -> str:
    """Add (or replace) ``name`` in ``out_dir/ests_datasets.json``; paths are stored relative to ``out_dir``
    so that the folder can move. Returns the manifest's path."""
    path = os.path.join(out_dir, MANIFEST_NAME)
    manifest = {"datasets": {}}
    if os.path.isfile(path):
        with open(path, encoding="utf-8") as f:
            manifest = json.load(f)

    def rel(p):
        return os.path.relpath(os.path.abspath(p), os.path.abspath(out_dir)).replace(os.sep, "/") if p else ""

    manifest["datasets"][name] = {"json_file": rel(json_file), "image_root": rel(image_root),
                                  "eval_protocol": eval_protocol, "eval_gt_zip": rel(eval_gt_zip),
                                  "voc_size": int(voc_size)}
    os.makedirs(out_dir, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(manifest, f, indent=1, sort_keys=True)
    return path


def _makedirs_for(path: str) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)


def _percentiles(values) -> Optional[Dict[str, float]]:
    if not values:
        return None
    return {f"p{p}": round(float(np.percentile(values, p)), 3) for p in _PERCENTILES}


def summary_dict(result: PreparedDataset, num_oov_shown: int = 50) -> Dict:
    """The numbers of the summary, json-ready."""
    care = [a for a in result.annotations if not a["iscrowd"]]
    return {
        "images": len(result.images),
        "instances": len(result.annotations),
        "dont_care": len(result.annotations) - len(care),
        "image_id_rule": result.image_id_rule,
        "fit_error_px": {"quadrilaterals": _percentiles(result.quad_fit_errors),
                         "polygons": _percentiles(result.fit_errors)},
        "bad_fits": [{"fit_error": round(e, 3), "where": w} for e, w in sorted(result.bad_fits, reverse=True)],
        "skipped_degenerate": result.skipped,
        "reoriented_rings": result.reoriented,
        "empty_texts_as_dont_care": result.empty_texts,
        "truncated_texts": result.truncated,
        "out_of_vocabulary": dict(result.oov.most_common(num_oov_shown)),
        "out_of_vocabulary_total": sum(result.oov.values()),
        "images_without_annotations": result.unannotated_images,
    }


def format_summary(summary: Dict, max_listed: int = 5) -> str:
    """The summary as a few aligned lines for the terminal."""
    def pct(p):
        return "none" if p is None else ", ".join(f"{k} {v:.2f}" for k, v in p.items())

    lines = [
        f"images                {summary['images']} (image ids: {summary['image_id_rule']})",
        f"instances             {summary['instances']} ({summary['dont_care']} don't care)",
        f"fit error px, quads   {pct(summary['fit_error_px']['quadrilaterals'])}",
        f"fit error px, polygons {pct(summary['fit_error_px']['polygons'])}",
        f"bad fits              {len(summary['bad_fits'])}"
        + "".join(f"\n    {b['fit_error']:.2f} px  {b['where']}" for b in summary["bad_fits"][:max_listed]),
        f"skipped (degenerate)  {len(summary['skipped_degenerate'])}"
        + "".join(f"\n    {s}" for s in summary["skipped_degenerate"][:max_listed]),
        f"reoriented rings      {summary['reoriented_rings']}",
        f"empty -> don't care   {summary['empty_texts_as_dont_care']}",
        f"truncated texts       {summary['truncated_texts']}",
        f"out of vocabulary     {summary['out_of_vocabulary_total']} characters"
        + (": " + " ".join(f"{c!r}x{n}" for c, n in summary["out_of_vocabulary"].items())
           if summary["out_of_vocabulary"] else ""),
    ]
    if summary["images_without_annotations"]:
        lines.append(f"not included          {len(summary['images_without_annotations'])} images without "
                     f"annotations (first: {summary['images_without_annotations'][0]})")
    return "\n".join(lines)
