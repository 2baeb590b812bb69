#!/usr/bin/env python
"""Score any text spotter's predictions with the official ESTS protocol (docs/EVALUATION.md), no model needed.

Input: the neutral ests-eval-predictions/v1 JSON (score threshold, recognition filter and lexicon are applied
here, as the official evaluator does), or a zip / folder of official per-image {image_id:07d}.txt files
(scored as given: the detection and end-to-end blocks of one official scoring run).

Runs (JSON input): task 0 = detection (no recognition filter): its detection block is the number ESTS
publishes; task 1 = spotting, once per --lexicon: its end-to-end block, and the detection block of that
same run (marked *, not comparable with task 0). The table goes to stdout (--json: JSON instead), settings
and progress to stderr. Errors are one line and exit 1 (2 for a wrong command line); --debug shows tracebacks.

Examples:
  tools/evaluate_predictions.py preds.json --dataset ic15 --gt-zip eval_gt/gt_icdar2015.zip
  tools/evaluate_predictions.py preds.json --dataset ic15 --gt-zip eval_gt/gt_icdar2015.zip \\
      --task 1 --lexicon strong --per-image images.csv --visualize pictures/ --image-dir ic15/test_images
  tools/evaluate_predictions.py det.zip --dataset tt --gt-zip eval_gt/gt_totaltext.zip
"""
import argparse
import json
import logging
import os
import sys

from ests_d2.utils.cli import INPUT_ERRORS, run_cli

# The project's modules (numpy, shapely, rapidfuzz...) are imported inside the functions that need them, so
# that --help and command-line mistakes answer in ~0.1 s instead of ~1 s.

TASKS = {"0": ("det",), "det": ("det",), "1": ("e2e",), "e2e": ("e2e",), "both": ("det", "e2e")}
SCRIPT_HEADERS = ["run", "metric", "value"]  # the table of the non-Latin protocols (no match counts)
JSON_ONLY_OPTIONS = ("task", "lexicon", "det_threshold", "rec_confidence", "voc_size", "vocabulary",
                     "vocabulary_file", "output_dir")


class UsageError(ValueError):
    """A command line that cannot be honoured (exit status 2)."""


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("predictions", help="neutral JSON file, or a zip / folder of official per-image txt files")
    p.add_argument("--gt-zip", required=True, help="official GT zip (e.g. gt_totaltext.zip)")
    p.add_argument("--dataset", help="totaltext (tt), ctw1500 (ctw), icdar2015 (ic15) or generic; for other "
                                     "scripts vintext, rects or unicode; default: the JSON's 'dataset' field")
    p.add_argument("--task", choices=sorted(TASKS), help="JSON input: 0 / det, 1 / e2e or both (default: both)")
    p.add_argument("--lexicon", action="append",
                   help="JSON input, task 1: one run per lexicon (none, full, weak, generic, strong or the "
                        "official lexicon_type number); repeatable; default: none")
    p.add_argument("--lexicon-root", help="folder with the official lexicons/ layout (totaltext/, ctw1500/, ic15/), "
                                          "or with lexicon.txt + pair_list.txt for generic; default: lexicons/ "
                                          "beside the GT zip, then $DETECTRON2_DATASETS/evaluation/lexicons")
    p.add_argument("--det-threshold", type=float, help="JSON input: keep round(score, 3) >= this (default: official)")
    p.add_argument("--rec-confidence", type=float, help="JSON input, task 1: recognition filter (default: official)")
    p.add_argument("--word-spotting", type=int, choices=[-1, 0, 1], default=-1,
                   help="force the word-spotting rules off (0) / on (1); -1: official (Total-Text only)")
    p.add_argument("--voc-size", type=int, help="JSON input: recognition classes of 'rec' ids (default: the "
                                                "vocabulary's; 97 = EN)")
    p.add_argument("--vocabulary", help="JSON input: how 'rec' ids decode: en (default), char_file, "
                                        "code_point_pickle or vintext (as MODEL.ESTS.VOCABULARY)")
    p.add_argument("--vocabulary-file", help="JSON input: the character file of --vocabulary char_file / "
                                             "code_point_pickle (as MODEL.ESTS.CUSTOM_DICT)")
    p.add_argument("--output-dir", help="JSON input: write each run's official det zip here")
    p.add_argument("--per-image", metavar="FILE", help="per-image results of every run to FILE.csv or FILE.json")
    p.add_argument("--visualize", metavar="DIR", help="one PNG per image (first task-1 run, else task 0) into DIR")
    p.add_argument("--image-dir", help="--visualize: folder of the images (else a blank canvas)")
    p.add_argument("--image-pattern", action="append",
                   help="--visualize: image file name with {image_id}, e.g. 'img_{image_id}.jpg'; repeatable; "
                        "default: img_{image_id}, img{image_id}, {image_id}, {image_id:07d} with .jpg/.png")
    p.add_argument("--json", action="store_true", help="print the results as JSON instead of a table")
    p.add_argument("--quiet", action="store_true", help="no progress bars or settings on stderr")
    p.add_argument("--debug", action="store_true", help="show the traceback of an error")
    return p.parse_args(argv)


def _progress(args):
    if args.quiet:
        return None
    from tqdm import tqdm

    return lambda it, desc=None: tqdm(it, desc=desc, file=sys.stderr, leave=False)


def _lexicon_root(args, protocol, lexicons):
    """The lexicon root to use, checked for every requested lexicon's files before any scoring starts."""
    from ests_d2.evaluation.lexicon import default_lexicon_roots, lexicon_files_missing

    if not lexicons:
        return args.lexicon_root
    if args.lexicon_root and not os.path.isdir(args.lexicon_root):
        raise UsageError(f"--lexicon-root {args.lexicon_root}: not a folder")
    roots = [args.lexicon_root] if args.lexicon_root else [r for r in default_lexicon_roots(args.gt_zip)
                                                           if os.path.isdir(r)]
    for root in roots:
        missing = [m for lex in lexicons for m in lexicon_files_missing(protocol, lex, root)]
        if not missing:
            return root
        if args.lexicon_root:
            raise UsageError(f"--lexicon {', '.join(lexicons)}: missing lexicon file(s) {missing} under {root}")
    looked = ", ".join(default_lexicon_roots(args.gt_zip))
    raise UsageError(f"--lexicon {', '.join(lexicons)} needs the {protocol} lexicon files: give --lexicon-root "
                     f"(no complete lexicon folder at {looked})")


def _runs(args, protocol):
    from ests_d2.evaluation.protocol import canonical_lexicon, resolve_settings

    tasks = TASKS[args.task or "both"]
    names = args.lexicon or ["none"]
    if "e2e" not in tasks and args.lexicon:
        raise UsageError("--lexicon applies to task-1 runs; use --task 1 or --task both")
    try:
        lexicons = list(dict.fromkeys(canonical_lexicon(protocol, name) for name in names))
    except ValueError as e:
        raise UsageError(f"--lexicon: {e}") from None
    overrides = dict(det_threshold=-1 if args.det_threshold is None else args.det_threshold,
                     rec_confidence=-1 if args.rec_confidence is None else args.rec_confidence,
                     word_spotting=args.word_spotting)
    runs = [resolve_settings(protocol, "det", **overrides)] if "det" in tasks else []
    if "e2e" in tasks:
        runs += [resolve_settings(protocol, "e2e", lexicon=lex, **overrides) for lex in lexicons]
    return runs, [lex for lex in lexicons if lex and "e2e" in tasks]


def _protocol(name, source: str, error=UsageError):
    """Canonical dataset name; ``source`` says where the name came from, for the message."""
    from ests_d2.evaluation.protocol import canonical_protocol

    try:
        return canonical_protocol(name)
    except ValueError as e:
        raise error(f"{source}: {e}") from None


def _vocabulary(args):
    from ests_d2.structures import load_vocabulary

    kind = args.vocabulary or ("char_file" if args.vocabulary_file else "en")
    try:
        return load_vocabulary(kind, args.vocabulary_file or "", args.voc_size)
    except (ValueError, OSError) as e:  # the library speaks in config keys; the user typed options
        message = str(e).replace("MODEL.ESTS.VOCABULARY", "--vocabulary").replace("MODEL.ESTS.CUSTOM_DICT",
                                                                                   "--vocabulary-file")
        raise UsageError(message.replace("MODEL.ESTS.VOC_SIZE", "--voc-size")) from None


def _score_json(args, gt, progress):
    from ests_d2.evaluation import predictions as neutral
    from ests_d2.evaluation.pipeline import evaluate_runs
    from ests_d2.evaluation.script_protocols import SCRIPT_PROTOCOLS

    vocabulary = _vocabulary(args)
    dataset, images = neutral.read_json(args.predictions, vocabulary)
    name, source = (args.dataset, "--dataset") if args.dataset else (dataset, f"{args.predictions}: 'dataset'")
    if not name:
        raise UsageError(f"--dataset is required: {args.predictions} has no 'dataset' field")
    if str(name).lower() in SCRIPT_PROTOCOLS:
        return _score_script_protocol(args, str(name).lower(), images, gt)
    protocol = _protocol(name, source, UsageError if args.dataset else ValueError)
    voc_size = vocabulary.num_classes
    runs, lexicons = _runs(args, protocol)
    root = _lexicon_root(args, protocol, lexicons)
    if not args.quiet:
        for run in runs:
            logging.info("%s", run.describe())
    results = evaluate_runs(images, gt, runs, root, voc_size, args.output_dir, args.gt_zip, progress, vocabulary)
    from ests_d2.evaluation.report import run_label

    return results, [run_label(r) for r in results], False


def _score_script_protocol(args, protocol, images, gt):
    """vintext / rects / unicode (``script_protocols``): their P / R / H (or 1-NED) blocks, without the
    per-run match detail that --per-image and --visualize need."""
    from ests_d2.evaluation.script_protocols import evaluate_script_protocol

    unsupported = [o for o in ("per_image", "visualize", "lexicon") if getattr(args, o)]
    if unsupported:
        raise UsageError(f"--dataset {protocol}: {', '.join('--' + o.replace('_', '-') for o in unsupported)} "
                         "not available for the non-Latin protocols")
    tasks = TASKS[args.task or "both"]
    results = evaluate_script_protocol(images, gt, protocol, tasks, args.det_threshold, args.rec_confidence,
                                       args.word_spotting, args.output_dir)
    return {"protocol": protocol, "results": results}, None, False


def _score_txt(args, gt, progress):
    from ests_d2.evaluation.pipeline import RunResult
    from ests_d2.evaluation.protocol import resolve_settings
    from ests_d2.evaluation.rrc_format import read_predictions_files
    from ests_d2.evaluation.scoring import score

    ignored = [f"--{o.replace('_', '-')}" for o in JSON_ONLY_OPTIONS if getattr(args, o) is not None]
    if ignored:
        raise UsageError(f"{' '.join(ignored)} only apply to JSON input; per-image txt files are scored as given "
                         "(threshold, recognition filter and lexicon were applied when they were written)")
    if not args.dataset:
        raise UsageError("--dataset is required for per-image txt input")
    settings = resolve_settings(_protocol(args.dataset, "--dataset"), "e2e", word_spotting=args.word_spotting)
    predictions = read_predictions_files(args.predictions)
    scored = score(gt, predictions, settings.word_spotting, args.gt_zip,
                   progress=None if progress is None else (lambda it: progress(it, desc="scoring")))
    return [RunResult(settings, scored, predictions)], ["files as given"], True


def evaluate(args):
    """Score, write the optional per-image file and pictures; returns (JSON-ready report, table rows, footnote?)."""
    from ests_d2.evaluation import report
    from ests_d2.evaluation.pipeline import load_gt_zip

    if args.per_image and os.path.splitext(args.per_image)[1].lower() not in report.PER_IMAGE_FORMATS:
        raise UsageError(f"--per-image {args.per_image}: the file name must end in .csv or .json")
    if (args.image_dir or args.image_pattern) and not args.visualize:
        raise UsageError("--image-dir / --image-pattern only apply with --visualize DIR")
    if not os.path.exists(args.predictions):
        raise FileNotFoundError(f"predictions not found: {args.predictions}")
    progress = _progress(args)
    gt = load_gt_zip(args.gt_zip)
    is_json = os.path.isfile(args.predictions) and args.predictions.lower().endswith(".json")
    results, labels, as_given = (_score_json if is_json else _score_txt)(args, gt, progress)
    if labels is None:  # a non-Latin protocol: plain metric blocks
        metrics_by_run = results["results"]
        record = {"predictions": args.predictions, "input": "neutral JSON", "gt_zip": args.gt_zip,
                  "protocol": results["protocol"],
                  "runs": [{"run": k, "blocks": {k: v}} for k, v in metrics_by_run.items()]}
        rows = [[run, metric, f"{value:.4f}"] for run, metrics in metrics_by_run.items()
                for metric, value in metrics.items()]
        return record, rows, False
    if args.per_image:
        rows = [row for r, label in zip(results, labels) for row in report.image_rows(r, gt, label)]
        report.write_image_rows(args.per_image, rows)
    if args.visualize:
        from ests_d2.evaluation.visualize import DEFAULT_IMAGE_PATTERNS, write_pictures

        shown = next((r for r in results if r.settings.task == "e2e"), results[0])
        write_pictures(shown, gt, args.visualize, args.image_dir, args.image_pattern or DEFAULT_IMAGE_PATTERNS,
                       None if progress is None else (lambda it: progress(it, desc="pictures")))
    record = {
        "predictions": args.predictions,
        "input": "official per-image files (scored as given)" if as_given else "neutral JSON",
        "gt_zip": args.gt_zip,
        "protocol": results[0].settings.protocol,
        "runs": [report.run_record(r, label, as_given) for r, label in zip(results, labels)],
    }
    note = not as_given and any(r.settings.task == "e2e" for r in results)
    return record, report.summary_rows(results, labels, as_given), note


def print_report(result: dict, table, note: bool, as_json: bool) -> None:
    from ests_d2.evaluation.report import SUMMARY_HEADERS, TASK1_DETECTION_NOTE

    if as_json:
        print(json.dumps(result, indent=1, ensure_ascii=False))
        return
    from tabulate import tabulate

    print(f"{result['predictions']} vs {result['gt_zip']} ({result['protocol']}, {result['input']})")
    headers = SUMMARY_HEADERS if not table or len(table[0]) == len(SUMMARY_HEADERS) else SCRIPT_HEADERS
    print(tabulate(table, headers=headers, disable_numparse=True))
    if note:
        print(TASK1_DETECTION_NOTE)


def main(argv=None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO, stream=sys.stderr, format="%(message)s")
    return run_cli("evaluate_predictions.py", lambda: print_report(*evaluate(args), args.json), debug=args.debug,
                   user_errors={UsageError: 2, INPUT_ERRORS: 1})


if __name__ == "__main__":
    sys.exit(main())
