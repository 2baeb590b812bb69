#!/usr/bin/env python
"""Train or evaluate ESTS with detectron2.

    tools/train_net.py --config-file configs/ESTS/X.yaml [--num-gpus N] [KEY VALUE ...]
    tools/train_net.py --config-file ... --resume          # continue exactly where the run stopped
    tools/train_net.py --config-file ... --resume --allow-config-change KEY VALUE  # resume with a changed key
    tools/train_net.py --config-file ... --eval-only MODEL.WEIGHTS model_final.pth

Without CUDA, ``--num-gpus N`` starts N CPU processes (gloo), which is how the distributed code is
tested. Multi-machine runs add ``--num-machines``, ``--machine-rank`` and ``--dist-url`` as in
detectron2.

Training stopped by a preemption signal (``SOLVER.PREEMPT_SIGNALS``, default SIGTERM) exits with code 75
after checkpointing; a refused config change on ``--resume`` exits with code 2.
"""
import logging
import sys

from detectron2.engine import default_argument_parser, default_setup
from detectron2.evaluation import verify_results
from detectron2.utils import comm

import ests_d2.data  # noqa: F401  (registers the built-in datasets)
import ests_d2.modeling  # noqa: F401  (registers the ESTS meta-architecture)
from ests_d2.config import load_ests_config
from ests_d2.engine import AtomicDetectionCheckpointer, Trainer, launch
from ests_d2.engine.resume_config import ConfigChangeRefused, resolve_resumed_config
from ests_d2.utils.cli import print_error

logger = logging.getLogger("ests_d2")


def setup(args):
    """Config from defaults + ESTS keys + the yaml file + command-line overrides."""
    cfg = load_ests_config(args.config_file, args.opts)
    cfg.freeze()
    default_setup(cfg, args)
    return cfg


def main(args, trainer_cls=Trainer):
    """Evaluate (``--eval-only``) or train; ``trainer_cls`` lets other entry points reuse this script."""
    cfg = setup(args)
    if args.eval_only:
        model = trainer_cls.build_model(cfg)
        checkpointer = AtomicDetectionCheckpointer(model, save_dir=cfg.OUTPUT_DIR)
        checkpointer.resume_or_load(cfg.MODEL.WEIGHTS, resume=args.resume)
        results = trainer_cls.test(cfg, model)
        if comm.is_main_process():
            verify_results(cfg, results)
        return results
    trainer = trainer_cls(cfg)
    trainer.resume_or_load(resume=args.resume)
    return trainer.train()


def invoke_main(trainer_cls=Trainer):
    parser = default_argument_parser()
    parser.add_argument(
        "--allow-config-change",
        action="store_true",
        help="with --resume: accept changed keys that break exactness (applied) or that the checkpoint "
        "restores (kept at the saved value); every change is listed either way",
    )
    args = parser.parse_args()
    logger.info("Command line arguments: %s", args)
    if args.resume and not args.eval_only:
        # Once, before any process starts, so that every process trains with the same config.
        try:
            args.opts = resolve_resumed_config(args.config_file, args.opts, args.allow_config_change)
        except ConfigChangeRefused as e:  # not run_cli: the refusal lists one changed key a line, kept as lines
            print_error("train_net.py", str(e))
            sys.exit(2)
    launch(
        main,
        args.num_gpus,
        num_machines=args.num_machines,
        machine_rank=args.machine_rank,
        dist_url=args.dist_url,
        args=(args, trainer_cls),
    )


if __name__ == "__main__":
    invoke_main()
