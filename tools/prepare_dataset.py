#!/usr/bin/env python
"""Prepare a text-spotting dataset from its native annotation files: Bezier-fitted COCO-text json, optional
evaluation GT zip, a summary, and a manifest that registers the dataset under ``--name``.

    tools/prepare_dataset.py FORMAT --images DIR --annotations DIR_OR_FILE --out DIR --name NAME [--eval-gt]

Formats: ``tools/prepare_dataset.py --help`` (one sub-command each); the walk-through is in datasets/README.md.
A malformed file stops with one line naming the file and line (``--debug`` for the traceback).
"""
import sys

from ests_d2.data.preparation.cli import main

if __name__ == "__main__":
    sys.exit(main())
