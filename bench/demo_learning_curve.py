#!/usr/bin/env python
"""Learning curves of the `make demo` model under other data and schedule choices (docs/DEMO.md, issue #23).

Trains ``configs/ESTS/Synthetic-Tiny.yaml`` with one torch thread on a variant of the synthetic data and
evaluates it every ``TEST.EVAL_PERIOD`` iterations (detection and end-to-end hmean land in
``<output>/metrics.json``). A data variant changes the generator's constants before the data is made, and gets
its own cache folder, so the shipped data is never touched:

    python bench/demo_learning_curve.py --data big --output output/curves/big \\
        MODEL.ESTS.MAX_TEXT_LEN 10 "MODEL.ESTS.ROI_OUTPUT_SIZE" "(8,10)" SOLVER.MAX_ITER 3000 TEST.EVAL_PERIOD 300

Variants (``--data``): ``v4`` the shipped data; ``upper`` upper-case words only, two fonts; ``big`` that with
words 24-40 px high (shipped: 14-34); ``words40`` ``big`` with 40 words of 3-6 letters (shipped: ~200 words and
10 number strings); ``memorise8`` ``big`` with only 8 training images (evaluate it on them with
``DATASETS.TEST "('synthetic_text_train',)"``: a memorisation check, not a result). ``--eval-only`` evaluates
``MODEL.WEIGHTS`` on a variant's test set (give the run's overrides again), ``--quantize int8`` its int8 version.
"""
import argparse
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VARIANTS = ("v4", "upper", "big", "words40", "memorise8")


def apply_variant(synthetic, name: str) -> None:
    """Change ``ests_d2.data.synthetic``'s generator constants for variant ``name`` (before any data is made)."""
    import cv2

    if name == "v4":
        return
    synthetic.CASE_PROBS = (1.0, 0.0)  # upper case only: scoring ignores case anyway
    synthetic._FONTS = (cv2.FONT_HERSHEY_SIMPLEX, cv2.FONT_HERSHEY_DUPLEX)
    if name == "upper":
        return
    synthetic.WORD_HEIGHT = (24, 40)
    if name == "words40":
        synthetic.WORDS = tuple(w for w in synthetic.WORDS if 3 <= len(w) <= 6)[:40]
        synthetic._NUMBER_WORDS = ("24", "100", "365", "2023")
    elif name == "memorise8":
        synthetic.SPLITS = {"train": (8, 0), "test": (40, 1)}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", choices=VARIANTS, default="v4")
    parser.add_argument("--output", required=True, help="OUTPUT_DIR of the run")
    parser.add_argument("--data-root", default=str(ROOT / "output" / "curves" / "data"),
                        help="parent of the variants' data caches (one folder per variant)")
    parser.add_argument("--eval-only", action="store_true", help="evaluate MODEL.WEIGHTS on the variant's data")
    parser.add_argument("--quantize", choices=["int8"], help="with --eval-only: evaluate the int8 model "
                        "(export/quantize.py) instead of the float32 one")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides: KEY VALUE ...")
    args = parser.parse_args()
    if args.quantize and not args.eval_only:
        parser.error("--quantize evaluates a trained model: add --eval-only")
    # Before ests_d2.data registers the datasets: the synthetic sets live under $DETECTRON2_DATASETS.
    os.environ["DETECTRON2_DATASETS"] = os.path.join(args.data_root, args.data)
    sys.path.insert(0, str(ROOT))
    import torch

    torch.set_num_threads(1)
    import ests_d2.data.synthetic as synthetic
    from detectron2.engine import default_argument_parser

    apply_variant(synthetic, args.data)
    sys.path.insert(0, str(ROOT / "tools"))
    import train_net

    config = str(ROOT / "configs" / "ESTS" / "Synthetic-Tiny.yaml")
    flags = ["--config-file", config] + (["--eval-only"] if args.eval_only else [])
    flags += ["MODEL.DEVICE", "cpu", "OUTPUT_DIR", args.output] + args.opts
    train_args = default_argument_parser().parse_args(flags)
    train_net.main(train_args, _int8_trainer() if args.quantize else train_net.Trainer)


def _int8_trainer():
    """The project's Trainer, evaluating the int8 version of the model it is given."""
    from ests_d2.engine import Trainer
    from ests_d2.export.quantize import quantize_linears

    class Int8Trainer(Trainer):
        @classmethod
        def test(cls, cfg, model, evaluators=None):
            return super().test(cfg, quantize_linears(model.eval()), evaluators)

    return Int8Trainer


if __name__ == "__main__":
    main()
