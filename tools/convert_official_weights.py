#!/usr/bin/env python
"""Convert an official ESTextSpotter checkpoint into a detectron2 checkpoint of ests-d2's ``ESTS``.

    python tools/convert_official_weights.py official.pth output.pth [--config-file cfg.yaml] [KEY VALUE ...]

The input is what the official ``main.py`` saves (``{'model', 'optimizer', 'lr_scheduler', 'epoch', 'args'}``)
or a bare state_dict. It is read with ``torch.load(weights_only=True)``; the pickled ``argparse.Namespace``
of the official format is the only non-tensor type allowed. The output is ``{'model': state_dict}``, loadable
with ``DetectionCheckpointer`` / ``MODEL.WEIGHTS``. With ``--config-file`` the converted weights are also
checked against the model that config builds (missing keys, shapes, vocabulary size) and against the official
variant the checkpoint comes from (EN / VinText 5 levels; ReCTS / MLT 4 levels without denoising): feature
levels, box and recognition classes, and -- when the file keeps its training ``args`` -- ``use_dn``.
"""
import argparse
import sys
from pathlib import Path

import torch


def load_official_checkpoint(path: Path):
    """(official state_dict, training ``args`` Namespace or None) stored in ``path`` (checkpoint or state_dict)."""
    torch.serialization.add_safe_globals([argparse.Namespace])
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - re-raised with the file name and the reason
        raise SystemExit(f"{path}: cannot be read as a weights-only PyTorch checkpoint ({e})") from e
    training_args = None
    if isinstance(checkpoint, dict) and "model" in checkpoint and isinstance(checkpoint["model"], dict):
        state = checkpoint["model"]
        training_args = checkpoint.get("args") if isinstance(checkpoint.get("args"), argparse.Namespace) else None
    elif isinstance(checkpoint, dict):
        state = checkpoint
    else:
        raise SystemExit(f"{path}: expected a dict (official checkpoint or state_dict), "
                         f"got {type(checkpoint).__name__}")
    bad = [k for k, v in state.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise SystemExit(f"{path}: field 'model' holds non-tensor entries: {', '.join(map(str, bad[:10]))}")
    return state, training_args


def _check_with_config(official, converted, training_args, config_file: str, opts):
    from detectron2.modeling import build_model

    import ests_d2.modeling  # noqa: F401  (registers ESTS)
    from ests_d2.config import load_ests_config
    from ests_d2.modeling.official_checkpoint import (
        check_against_model, check_official_against_config, official_model_facts,
    )

    cfg = load_ests_config(config_file, opts)
    cfg.MODEL.DEVICE = "cpu"
    problems = check_official_against_config(official_model_facts(official), cfg, training_args)
    if training_args is None:
        print("the file keeps no training args: whether the official run used denoising is not checked")
    try:
        model = build_model(cfg)
    except (OSError, ValueError) as e:  # e.g. the config's vocabulary file is missing
        return problems + [f"the model of the config cannot be built: {e}"]
    return problems + check_against_model(converted, model.state_dict())


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("input", type=Path, help="official checkpoint (.pth)")
    parser.add_argument("output", type=Path, help="detectron2 checkpoint to write")
    parser.add_argument("--config-file", default="", help="check the result against the model of this config")
    parser.add_argument("opts", nargs="*", help="config overrides for --config-file (KEY VALUE ...)")
    args = parser.parse_intermixed_args(argv)

    from ests_d2.modeling.official_checkpoint import (
        convert_official_state_dict, identify_official_variant, official_model_facts,
    )

    official, training_args = load_official_checkpoint(args.input)
    try:
        converted, report = convert_official_state_dict(official)
    except ValueError as e:
        raise SystemExit(f"{args.input}: {e}") from e
    print(report.summary())
    variant = identify_official_variant(official_model_facts(official))
    if variant is not None:
        print(f"official {variant.name} model (config: {variant.config})")
    if args.config_file:
        problems = _check_with_config(official, converted, training_args, args.config_file, args.opts)
        if problems:
            print(f"{args.input} does not fit the model of {args.config_file}:", file=sys.stderr)
            for problem in problems:
                print(f"  - {problem}", file=sys.stderr)
            return 1
        print(f"all keys and shapes fit the model of {args.config_file}")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"model": converted}, args.output)
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
