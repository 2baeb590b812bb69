#!/usr/bin/env python
"""The last step of `make demo`: score the trained spotter's test predictions, draw a few test images, plot the
run, and print one line: "read N of M words (...); pictures in ...; plots in ...".

    python tools/demo_report.py output/demo [--dataset synthetic_text_test] [--num-pictures 4]

Reads <run>/inference/<dataset>/text_predictions.json (written by the evaluation at the end of training) and
<run>/metrics.json; writes <run>/pictures/*.png and <run>/plots/*.png. Errors are one line and exit 1
(--debug shows the traceback).
"""
import argparse
import os
import sys

from ests_d2.utils.cli import INPUT_ERRORS, run_cli


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", help="the training OUTPUT_DIR")
    parser.add_argument("--dataset", default="synthetic_text_test", help="the evaluated (registered) dataset")
    parser.add_argument("--num-pictures", type=int, default=4, help="pictures of the first N test images")
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error")
    return parser.parse_args(argv)


def report(args) -> str:
    from detectron2.data import DatasetCatalog, MetadataCatalog

    import ests_d2.data  # noqa: F401  (registers the built-in datasets)
    from ests_d2.utils.demo_report import build_demo_report

    predictions = os.path.join(args.run, "inference", args.dataset, "text_predictions.json")
    if not os.path.isfile(predictions):
        raise FileNotFoundError(f"{predictions} does not exist: has the run been evaluated on {args.dataset}?")
    if args.dataset not in DatasetCatalog.list():
        raise KeyError(f"--dataset {args.dataset}: not a registered dataset")
    gt_zip = MetadataCatalog.get(args.dataset).get("eval_gt_zip", "")
    if not gt_zip:
        raise ValueError(f"--dataset {args.dataset}: its metadata has no eval_gt_zip")
    image_files = {d["image_id"]: d["file_name"] for d in DatasetCatalog.get(args.dataset)}
    pictures, plots = os.path.join(args.run, "pictures"), os.path.join(args.run, "plots")
    result = build_demo_report(predictions, gt_zip, image_files, pictures, os.path.join(args.run, "metrics.json"),
                               plots, args.num_pictures)
    return result.summary_line(pictures, plots)


def main(argv=None) -> int:
    args = parse_args(argv)
    # KeyError: an unregistered --dataset (report's own message, and DatasetCatalog's)
    return run_cli("demo_report.py", lambda: print(report(args)), debug=args.debug,
                   user_errors={(*INPUT_ERRORS, KeyError): 1})


if __name__ == "__main__":
    sys.exit(main())
