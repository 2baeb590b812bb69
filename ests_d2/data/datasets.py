"""Registration of text-spotting datasets in detectron2's ``DatasetCatalog`` / ``MetadataCatalog``.

Registration is lazy: it stores paths and a loader function and never reads a file. Loading happens
on ``DatasetCatalog.get(name)``.

Metadata of every text dataset (the evaluator relies on exactly these names):

- ``evaluator_type``: ``"text"``.
- ``eval_protocol``: ``"totaltext"`` | ``"ctw1500"`` | ``"icdar2015"`` | ``"generic"`` -- which
  official rules apply (word spotting, thresholds, lexicon kind; see docs/EVALUATION.md);
  for other scripts ``"vintext"`` | ``"rects"`` | ``"unicode"`` (``ests_d2.evaluation.script_protocols``).
- ``eval_gt_zip``: path of the official-format GT zip (members ``{image_id:07d}.txt``, lines
  ``x1,y1,...,xn,yn,####text``), or ``""`` when none is known (e.g. training sets).
- ``lexicon_root``: folder with the lexicon files of the protocol, or ``""``. Official layout for
  totaltext / ctw1500 / icdar2015 (``tt_lexicon.txt`` + ``tt_pair_list.txt``, ...); for ``"generic"``
  datasets it holds ``lexicon.txt`` (one upper-case word per line) and ``pair_list.txt``
  (``UPPER original`` per line, the Total-Text pair-list format).
- ``voc_size``: recognition classes V of the ``rec`` ids (97 for EN: 95 ASCII + unknown + pad).
- ``rec_pad_id``: the padding id of those ``rec`` ids (V - 1 unless set; the official VinText json pads with 105).
- ``json_file``, ``image_root``, ``thing_classes`` (``["text"]``).

Built-in names, rooted at ``$DETECTRON2_DATASETS`` (default ``datasets/``) with the official folder
layout (see datasets/README.md): ``totaltext_train/test``, ``ctw1500_train/test``,
``icdar2013_train``, ``icdar2015_train/test``, ``mlt2017_train``, ``syntext1_train``,
``syntext2_train``; other scripts: ``vintext_train/val/test`` (V 107), ``rects_train/val/test``,
``art_train``, ``lsvt_train``, ``chnsyntext_train`` (V 5463), ``mlt2019_train`` (V 4268);
plus the embedded data: ``synthetic_text_train/test`` (generated on first use under
``$DETECTRON2_DATASETS/synthetic_text``) and ``icdar2015_samples`` (5 real ICDAR2015 test images
shipped in the repository's ``datasets/icdar2015_samples``).
"""
import functools
import os
from pathlib import Path
from typing import Callable, Dict, List, Optional

from detectron2.data import DatasetCatalog, MetadataCatalog

from ests_d2.evaluation.protocol import canonical_protocol
from ests_d2.evaluation.script_protocols import SCRIPT_PROTOCOLS

from .synthetic import LANGUAGES, ensure_synthetic_text, synthetic_paths
from .text_json import load_text_json

EN_VOC_SIZE = 97

# name -> (image folder, json, eval protocol, GT zip under evaluation/, lexicon folder under evaluation/lexicons/)
_OFFICIAL_DATASETS = {
    "totaltext_train": ("totaltext/train_images", "totaltext/train.json", "totaltext", "", "totaltext"),
    "totaltext_test": (
        "totaltext/test_images", "totaltext/test.json", "totaltext", "gt_totaltext.zip", "totaltext"
    ),
    "ctw1500_train": (
        "CTW1500/ctwtrain_text_image", "CTW1500/annotations/train_ctw1500_maxlen25_v2.json", "ctw1500", "",
        "ctw1500",
    ),
    "ctw1500_test": (
        "CTW1500/ctwtest_text_image", "CTW1500/annotations/test_ctw1500_maxlen25.json", "ctw1500",
        "gt_ctw1500.zip", "ctw1500",
    ),
    "icdar2013_train": ("icdar2013/train_images", "icdar2013/ic13_train.json", "generic", "", ""),
    "icdar2015_train": ("icdar2015_all/train_images", "icdar2015_all/ic15_train.json", "icdar2015", "", "ic15"),
    "icdar2015_test": (
        "icdar2015_all/test_images", "icdar2015_all/ic15_test.json", "icdar2015", "gt_icdar2015.zip", "ic15"
    ),
    "mlt2017_train": ("mlt2017/MLT_train_images", "mlt2017/train.json", "generic", "", ""),
    "syntext1_train": ("syntext1/syntext_word_eng", "syntext1/train.json", "generic", "", ""),
    "syntext2_train": ("syntext2/emcs_imgs", "syntext2/train.json", "generic", "", ""),
}

# Official non-EN data (folders as the official datasets/coco.py names them; "(sic)" paths are the official ones):
# name -> (image folder, json, eval protocol, GT zip under evaluation/, voc_size, rec padding id)
_OFFICIAL_SCRIPT_DATASETS = {
    "art_train": ("ArT/rename_artimg_train", "ArT/annotations/abcnet_art_train.json", "unicode", "", 5463, 5462),
    "lsvt_train": ("LSVT/rename_lsvtimg_train", "LSVT/annotations/abcnet_lsvt_train.json", "unicode", "", 5463, 5462),
    "rects_train": ("ReCTS/ReCTS_train_images", "ReCTS/annotations/rects_train.json", "rects", "", 5463, 5462),
    "rects_val": ("ReCTS/ReCTS_test_images", "ReCTS/annotations/rects_val.json", "rects", "", 5463, 5462),  # (sic)
    "rects_test": ("ReCTS_test_images", "annotations/rects_test.json", "rects", "", 5463, 5462),  # (sic)
    "chnsyntext_train": ("syntext/syn_130k_images", "syntext/chn_syntext.json", "unicode", "", 5463, 5462),
    "vintext_train": ("vintext/train_images", "vintext/train.json", "vintext", "", 107, 105),
    "vintext_val": ("vintext/val_image", "vintext/val.json", "vintext", "", 107, 105),
    "vintext_test": ("vintext/test_image", "vintext/test.json", "vintext", "gt_vintext.zip", 107, 105),
    "mlt2019_train": (
        "icdar2019_mlt_images", "icdar2019mlt_with_synth_coco_fomat/abc_icdar_2019_mlt.json", "unicode", "", 4268, 4267,
    ),
}

# The repository's own datasets/ folder: the embedded real samples live there whatever the cwd is.
PROJECT_DATASETS_DIR = Path(__file__).resolve().parents[2] / "datasets"
ICDAR2015_SAMPLES_DIR = PROJECT_DATASETS_DIR / "icdar2015_samples"


def datasets_root() -> str:
    """``$DETECTRON2_DATASETS`` or ``datasets`` (detectron2's convention, relative to the cwd)."""
    return os.path.expanduser(os.getenv("DETECTRON2_DATASETS", "datasets"))


def _canonical_eval_protocol(dataset_name: str, protocol: str) -> str:
    """The evaluation tool's name for ``protocol`` (aliases such as "ic15" accepted), or a script protocol."""
    if str(protocol).lower() in SCRIPT_PROTOCOLS:
        return str(protocol).lower()
    try:
        return canonical_protocol(protocol)
    except ValueError as e:
        raise ValueError(f"dataset '{dataset_name}': eval_protocol: {e} (or, for other scripts, one of "
                         f"{sorted(SCRIPT_PROTOCOLS)})") from None


def register_text_instances(name: str, json_file: str, image_root: str, *,
                            loader: Optional[Callable[[], List[Dict]]] = None, verify_images: Optional[bool] = None,
                            **metadata) -> None:
    """Register a COCO-text json as a detectron2 dataset (lazily: nothing is read here).

    Args:
        name: dataset name, e.g. ``"my_text_train"``.
        json_file: COCO-text json (``bezier_pts``, ``rec``, ...; see ``text_json.load_text_json``).
        image_root: folder the json's ``file_name`` entries are relative to.
        loader: what ``DatasetCatalog.get(name)`` calls instead of loading ``json_file`` directly (e.g. to
            generate the file first).
        verify_images: pre-check every image when the dataset is loaded (``load_text_json``); None: only
            when ``$ESTS_VERIFY_IMAGES`` is 1 at that time.
        metadata: extra metadata; ``eval_protocol`` (default ``"generic"``), ``eval_gt_zip``,
            ``lexicon_root`` (default ``""``) and ``voc_size`` (default 97) are always set.
    """
    metadata = {"eval_protocol": "generic", "eval_gt_zip": "", "lexicon_root": "", "voc_size": EN_VOC_SIZE,
                **metadata}
    metadata.setdefault("rec_pad_id", metadata["voc_size"] - 1)
    metadata["eval_protocol"] = _canonical_eval_protocol(name, metadata["eval_protocol"])
    DatasetCatalog.register(
        name,
        loader or functools.partial(load_text_json, json_file, image_root, name, voc_size=metadata["voc_size"],
                                    pad_id=metadata["rec_pad_id"], verify_images=verify_images),
    )
    MetadataCatalog.get(name).set(
        json_file=json_file, image_root=image_root, evaluator_type="text", thing_classes=["text"], **metadata
    )


def _load_synthetic(root: str, split: str, name: str, language: str = "en"):
    """Generate the synthetic set on first use (cached on disk), then load it like any other json."""
    ensure_synthetic_text(root, language)
    paths = synthetic_paths(root, split)
    meta = MetadataCatalog.get(name)
    return load_text_json(paths["json_file"], paths["image_root"], name, voc_size=meta.voc_size,
                          pad_id=meta.rec_pad_id)


def register_all_text_datasets(root: str) -> None:
    """Register every built-in name (skipping names that are already registered)."""
    for name, (image_dir, json_rel, protocol, gt_zip, lexicon_dir) in _OFFICIAL_DATASETS.items():
        if name in DatasetCatalog.list():
            continue
        register_text_instances(
            name,
            os.path.join(root, json_rel),
            os.path.join(root, image_dir),
            eval_protocol=protocol,
            eval_gt_zip=os.path.join(root, "evaluation", gt_zip) if gt_zip else "",
            lexicon_root=os.path.join(root, "evaluation", "lexicons", lexicon_dir) if lexicon_dir else "",
        )

    for name, (image_dir, json_rel, protocol, gt_zip, voc_size, pad_id) in _OFFICIAL_SCRIPT_DATASETS.items():
        if name not in DatasetCatalog.list():
            register_text_instances(
                name, os.path.join(root, json_rel), os.path.join(root, image_dir), eval_protocol=protocol,
                eval_gt_zip=os.path.join(root, "evaluation", gt_zip) if gt_zip else "", voc_size=voc_size,
                rec_pad_id=pad_id,
            )

    # synthetic_text_*: EN (generic protocol); synthetic_vi_*: Vietnamese, VinText vocabulary, "unicode" protocol
    vietnamese = dict(eval_protocol="unicode", voc_size=107, rec_pad_id=105)
    for prefix, language, extra in (("synthetic_text", "en", {}), ("synthetic_vi", "vi", vietnamese)):
        synthetic_root = os.path.join(root, LANGUAGES[language][0])
        for split in ("train", "test"):
            name = f"{prefix}_{split}"
            if name in DatasetCatalog.list():
                continue
            paths = synthetic_paths(synthetic_root, split)
            register_text_instances(name, paths["json_file"], paths["image_root"],
                                    loader=functools.partial(_load_synthetic, synthetic_root, split, name, language),
                                    eval_gt_zip=paths["eval_gt_zip"], lexicon_root=paths["lexicon_root"], **extra)

    if "icdar2015_samples" not in DatasetCatalog.list():
        register_text_instances(
            "icdar2015_samples",
            str(ICDAR2015_SAMPLES_DIR / "ic15_samples.json"),
            str(ICDAR2015_SAMPLES_DIR / "images"),
            eval_protocol="icdar2015",
            eval_gt_zip=str(ICDAR2015_SAMPLES_DIR / "gt_icdar2015_samples.zip"),
            lexicon_root=os.path.join(root, "evaluation", "lexicons", "ic15"),
        )
