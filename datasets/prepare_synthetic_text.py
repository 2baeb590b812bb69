"""Generate (or refresh) the embedded synthetic scene-text dataset.

Training and evaluation generate it on first use anyway; this script does it ahead of time, e.g. before
starting several processes. Output: $DETECTRON2_DATASETS/synthetic_text (default datasets/synthetic_text).

Usage: python datasets/prepare_synthetic_text.py [--root DIR] [--force]
"""
import argparse
import os
import shutil

from ests_d2.data.datasets import datasets_root
from ests_d2.data.synthetic import SYNTHETIC_DIRNAME, ensure_synthetic_text


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default=os.path.join(datasets_root(), SYNTHETIC_DIRNAME))
    parser.add_argument("--force", action="store_true", help="delete the cache and generate it again")
    args = parser.parse_args()
    if args.force:
        shutil.rmtree(args.root, ignore_errors=True)
    print(ensure_synthetic_text(args.root))


if __name__ == "__main__":
    main()
