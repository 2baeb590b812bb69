#!/usr/bin/env python
"""Describe a detectron2 / ests-d2 or official ESTS checkpoint and say whether --resume can continue from it."""
import argparse
import json
import sys

from ests_d2.utils.checkpoint_inspection import describe_checkpoint, load_checkpoint
from ests_d2.utils.cli import INPUT_ERRORS, run_cli


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("checkpoint", help="a .pth file")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    parser.add_argument("--debug", action="store_true", help="on an error, show the full traceback")
    args = parser.parse_args(argv)
    return run_cli("inspect_checkpoint.py", lambda: print_summary(summarize(args.checkpoint), args.json),
                   debug=args.debug, user_errors={INPUT_ERRORS: 1})


def summarize(path: str) -> dict:
    checkpoint = load_checkpoint(path)  # its errors name the file
    try:
        return describe_checkpoint(checkpoint)
    except ValueError as e:  # about what the file holds: say which file
        raise ValueError(f"{path}: {e}") from e


def print_summary(summary: dict, as_json: bool) -> None:
    if as_json:
        print(json.dumps(summary, indent=1))
        return
    width = max(len(k) for k in summary)
    for key, value in summary.items():
        if isinstance(value, dict):
            value = ", ".join(f"{k}={v}" for k, v in value.items())
        print(f"{key.replace('_', ' '):<{width}}  {value}")


if __name__ == "__main__":
    sys.exit(main())
