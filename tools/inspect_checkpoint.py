#!/usr/bin/env python
"""Describe a detectron2 / ests-d2 or official ESTS checkpoint and say whether --resume can continue from it."""
import argparse
import json
import sys

from ests_d2.utils.checkpoint_inspection import describe_checkpoint, load_checkpoint


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("checkpoint", help="a .pth file")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    parser.add_argument("--debug", action="store_true", help="on an error, show the full traceback")
    args = parser.parse_args()
    try:
        summary = describe_checkpoint(load_checkpoint(args.checkpoint))
    except Exception as e:  # one line for whoever runs the tool; the traceback only on request
        if args.debug:
            raise
        lines = str(e).strip().splitlines()
        message = lines[0] if lines else type(e).__name__
        if not isinstance(e, (ValueError, OSError)):
            message = f"{type(e).__name__}: {message}"
        if args.checkpoint not in message:
            message = f"{args.checkpoint}: {message}"
        sys.exit(f"{parser.prog}: error: {message} (--debug shows the traceback)")
    if args.json:
        print(json.dumps(summary, indent=1))
        return
    width = max(len(k) for k in summary)
    for key, value in summary.items():
        if isinstance(value, dict):
            value = ", ".join(f"{k}={v}" for k, v in value.items())
        print(f"{key.replace('_', ' '):<{width}}  {value}")


if __name__ == "__main__":
    main()
