"""The command line of ``tools/prepare_dataset.py`` (kept here so that tests and scripts can call ``main``).

One sub-command per format of ``readers.FORMATS``; every error in the input ends with one line on stderr naming
the file and line, and exit status 1 (``--debug`` re-raises for the traceback).
"""
import argparse
import json
import os

from ests_d2.structures import CharVocabulary
from ests_d2.utils.cli import INPUT_ERRORS, run_cli

from .prepare import DEFAULT_BAD_FIT_RATIO, prepare_dataset
from .readers import FORMATS
from .writers import format_summary, summary_dict, update_manifest, write_coco_json, write_eval_gt


def _common_arguments(parser):
    parser.add_argument("--images", required=True, help="folder of the images")
    parser.add_argument("--annotations", required=True, help="annotation file, or folder of the format's files")
    parser.add_argument("--out", required=True, help="output folder (put it under $DETECTRON2_DATASETS to register)")
    parser.add_argument("--name", required=True, help="dataset name for DATASETS.TRAIN / TEST, e.g. my_text_train")
    parser.add_argument("--eval-gt", action="store_true", help="also write the official evaluation GT zip (test sets)")
    parser.add_argument("--protocol", choices=("totaltext", "ctw1500", "icdar2015", "generic"),
                        help="evaluation protocol (default: the format's)")
    parser.add_argument("--config-file", default="",
                        help="training config: take MODEL.ESTS.VOC_SIZE / CUSTOM_DICT / MAX_TEXT_LEN from it")
    parser.add_argument("--voc-size", type=int, help="MODEL.ESTS.VOC_SIZE (default: the config's, else 97)")
    parser.add_argument("--custom-dict", help="MODEL.ESTS.CUSTOM_DICT, one character per line (default: the config's)")
    parser.add_argument("--max-text-len", type=int, help="rec length (default: the config's, else 25)")
    parser.add_argument("--image-ids", choices=("auto", "name", "sequential"), default="auto",
                        help="name: the number in the file name (official ICDAR/CTW1500 ids); sequential: 1..N")
    parser.add_argument("--pairs", default="", help="CSV annotation,image[,image_id] when names do not match")
    parser.add_argument("--start", choices=("first", "last", "auto"), help="where rings start (default: format's)")
    parser.add_argument("--split", choices=("half", "corners"), help="how rings split into sides (default: format's)")
    parser.add_argument("--bad-fit-ratio", type=float, default=DEFAULT_BAD_FIT_RATIO,
                        help="flag fits whose error exceeds this fraction of the text height")
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error")

DESCRIPTION = ("Prepare a text-spotting dataset from its native annotation files: Bezier-fitted COCO-text json, "
               "optional evaluation GT zip, summary, and a manifest that registers it under --name.")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=DESCRIPTION,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="format", required=True, metavar="FORMAT")
    for name, spec in FORMATS.items():
        _common_arguments(sub.add_parser(name, help=spec.doc, description=spec.doc))
    return parser


def _vocabulary_settings(args) -> None:
    """Fill ``voc_size`` / ``custom_dict`` / ``max_text_len``: the flag, else the training config, else EN."""
    ests = None
    if args.config_file:
        from ests_d2.config import load_ests_config

        try:
            ests = load_ests_config(args.config_file).MODEL.ESTS
        except (AssertionError, KeyError, OSError, ValueError) as e:  # detectron2 asserts that the file exists
            raise ValueError(f"{args.config_file}: cannot be read as an ests-d2 config ({e})") from e
    for attr, key, default in (("voc_size", "VOC_SIZE", 97), ("custom_dict", "CUSTOM_DICT", ""),
                               ("max_text_len", "MAX_TEXT_LEN", 25)):
        if getattr(args, attr) is None:
            setattr(args, attr, ests[key] if ests is not None else default)


def run(args) -> dict:
    """Prepare and write everything; returns the summary dict."""
    _vocabulary_settings(args)
    vocab = CharVocabulary.from_config(args.voc_size, args.custom_dict)
    result = prepare_dataset(args.format, args.annotations, args.images, vocab, max_text_len=args.max_text_len,
                             image_ids=args.image_ids, pairs_file=args.pairs, start=args.start, split=args.split,
                             bad_fit_ratio=args.bad_fit_ratio)
    json_file = os.path.join(args.out, f"{args.name}.json")
    write_coco_json(json_file, result, args.name, vocab, args.max_text_len, args.custom_dict)
    gt_zip = os.path.join(args.out, f"gt_{args.name}.zip") if args.eval_gt else ""
    if gt_zip:
        write_eval_gt(gt_zip, result)
    protocol = args.protocol or FORMATS[args.format].protocol
    manifest = update_manifest(args.out, args.name, json_file, args.images, protocol, vocab.num_classes, gt_zip)
    summary = summary_dict(result)
    with open(os.path.join(args.out, f"{args.name}_summary.json"), "w", encoding="utf-8") as f:
        json.dump(summary, f, indent=1, ensure_ascii=False)
    print(format_summary(summary))
    print(f"wrote {json_file}" + (f", {gt_zip}" if gt_zip else "") + f"; registered as '{args.name}' by {manifest} "
          f"(found when {args.out} is, or is directly under, $DETECTRON2_DATASETS)")
    return summary


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    # NativeFormatError is a ValueError: a malformed annotation file is an input error like the others
    return run_cli("prepare_dataset.py", lambda: run(args), debug=args.debug, user_errors={INPUT_ERRORS: 1})

