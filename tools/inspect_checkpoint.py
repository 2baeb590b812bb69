#!/usr/bin/env python
"""Describe a detectron2 / ests-d2 or official ESTS checkpoint and say whether --resume can continue from it."""
import argparse
import json

from ests_d2.utils.checkpoint_inspection import describe_checkpoint, load_checkpoint


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("checkpoint", help="a .pth file")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    args = parser.parse_args()
    try:
        summary = describe_checkpoint(load_checkpoint(args.checkpoint))
    except (ValueError, FileNotFoundError) as e:
        message = str(e)
        parser.error(message if args.checkpoint in message else f"{args.checkpoint}: {message}")
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
