#!/usr/bin/env python
"""Score text-spotting predictions with the official ESTS protocol, without a model.

Input is either the neutral ``ests-eval-predictions/v1`` JSON (thresholds, recognition filter and
lexicon are applied here, as the official evaluator does) or a zip / folder of official per-image
``{image_id:07d}.txt`` files (scored as given: both the detection and the end-to-end block of one
official scoring run). The JSON result goes to stdout; progress and settings to stderr.

Examples:
  tools/evaluate_predictions.py preds.json --dataset icdar2015 --gt-zip eval_gt/gt_icdar2015.zip \\
      --lexicon-root eval_gt/lexicons --lexicon strong
  tools/evaluate_predictions.py det.zip --dataset totaltext --gt-zip eval_gt/gt_totaltext.zip
"""
import argparse
import json
import logging
import os
import sys

from tqdm import tqdm

from ests_d2.structures import CharVocabulary
from ests_d2.evaluation import predictions as neutral
from ests_d2.evaluation.pipeline import load_gt_zip, run_evaluation
from ests_d2.evaluation.protocol import PROTOCOLS, canonical_protocol, resolve_runs, resolve_settings
from ests_d2.evaluation.rrc_format import read_predictions_files
from ests_d2.evaluation.scoring import score


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("predictions", help="neutral JSON file, or a zip / folder of official per-image txt files")
    p.add_argument("--dataset", choices=PROTOCOLS, help="protocol; default: the JSON's 'dataset' field")
    p.add_argument("--gt-zip", required=True, help="official GT zip (e.g. gt_totaltext.zip)")
    p.add_argument("--lexicon-root", help="folder with the official lexicons/ layout (totaltext/, ctw1500/, ic15/)")
    p.add_argument("--lexicon", action="append", default=[],
                   help="add an e2e run with this lexicon (full, weak, generic, strong or the official "
                        "lexicon_type number); repeatable")
    p.add_argument("--task", choices=["det", "e2e", "both"], default="both",
                   help="JSON input: det = official task 0 (no rec filter), e2e = task 1 (default: both)")
    p.add_argument("--det-threshold", type=float, default=-1, help="keep round(score,3) >= this (-1: official)")
    p.add_argument("--rec-confidence", type=float, default=-1, help="e2e rec filter (-1: official)")
    p.add_argument("--word-spotting", type=int, choices=[-1, 0, 1], default=-1,
                   help="force word-spotting rules off (0) / on (1); -1: official (Total-Text only)")
    p.add_argument("--voc-size", type=int, default=97, help="recognition classes (97 = EN)")
    p.add_argument("--output-dir", help="write each run's official det zip here")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    return p.parse_args(argv)


def main(argv=None) -> dict:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(message)s")
    progress = None if args.quiet else (lambda it, desc=None: tqdm(it, desc=desc, file=sys.stderr))
    gt = load_gt_zip(args.gt_zip)
    is_json = os.path.isfile(args.predictions) and args.predictions.lower().endswith(".json")
    if not is_json:
        if not args.dataset:
            raise SystemExit("--dataset is required for per-image txt predictions")
        settings = resolve_settings(args.dataset, "e2e", word_spotting=args.word_spotting)
        scored = score(gt, read_predictions_files(args.predictions), settings.word_spotting, args.gt_zip,
                       progress=None if progress is None else (lambda it: progress(it, desc="scoring")))
        return {
            "input": "official per-image files (scored as given)",
            "settings": {"protocol": settings.protocol, "word_spotting": settings.word_spotting},
            "results": {"text_det": scored.det.metrics(), "text_e2e": scored.e2e.metrics()},
        }
    vocab = CharVocabulary.from_config(args.voc_size)
    dataset, images = neutral.read_json(args.predictions, vocab)
    protocol = canonical_protocol(args.dataset or dataset or "")
    tasks = ["det", "e2e"] if args.task == "both" else [args.task]
    runs = resolve_runs(protocol, tasks, args.lexicon, det_threshold=args.det_threshold,
                        rec_confidence=args.rec_confidence, word_spotting=args.word_spotting)
    results = run_evaluation(images, gt, runs, args.lexicon_root, args.voc_size, args.output_dir,
                             args.gt_zip, progress)
    return {
        "input": "neutral JSON",
        "settings": {run.run_name: run.describe() for run in runs},
        "results": results,
    }


if __name__ == "__main__":
    print(json.dumps(main(), indent=1))
