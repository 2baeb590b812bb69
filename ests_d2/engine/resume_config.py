"""What a changed config does to a resumed run, decided before the run starts.

``--resume`` compares the config it is given with ``OUTPUT_DIR/config.yaml``, the config the checkpoint
was trained with, and lists every changed key. Each change is one of:

- **bookkeeping**: when to log, checkpoint, evaluate and what to evaluate; the trained weights do not
  depend on it, so it is accepted;
- **restored**: a value the checkpoint restores (optimizer hyper-parameters and learning rates, RNG
  and data seeds, the initial weights): the new value would not take effect;
- **exactness**: anything else (model, data, augmentation, schedule, ...): it takes effect from the
  next iteration, and the run is then no longer the continuation of the recorded one.

Restored and exactness changes are refused unless explicitly allowed. When allowed, a restored key
is pinned back to the saved value (it is what stays in effect) and an exactness change is applied,
the config of the iterations before it kept as ``config_until_iter_NNNNNNN.yaml``. Either way the
config that is printed and saved as ``config.yaml`` is the one in effect.
"""
import logging
import os
import shutil
from typing import Dict, List, Tuple

import torch
from detectron2.config import CfgNode, get_cfg

from ..config import add_ests_config, load_ests_config
from .checkpoint import find_resume_checkpoint

__all__ = ["ConfigChangeRefused", "resolve_resumed_config"]

logger = logging.getLogger(__name__)

_BOOKKEEPING_PREFIXES = (
    "OUTPUT_DIR",  # a run folder moved elsewhere
    "SOLVER.CHECKPOINT_PERIOD",
    "SOLVER.LOG_PERIOD",
    "SOLVER.MAX_CHECKPOINTS_TO_KEEP",
    "SOLVER.PREEMPT_SIGNALS",
    "TEST.",  # evaluation runs on its own RNG streams: how and how often never touches training
    "DATASETS.TEST",
    "DATALOADER.NUM_WORKERS",  # augmentation is seeded per (position, slot), not per worker
    "VIS_PERIOD",
)
# Loaded from the checkpoint over what the config builds: the optimizer's param groups (lr, weight
# decay), the scheduler's base learning rates, the RNG states and data seed, the weights.
_RESTORED_KEYS = ("SOLVER.BASE_LR", "SOLVER.BACKBONE_MULTIPLIER", "SOLVER.WEIGHT_DECAY", "SEED", "MODEL.WEIGHTS")

_ABSENT = "<absent>"


class ConfigChangeRefused(ValueError):
    """The resumed config changes keys that break exactness or would not take effect."""


def _plain(value):
    """Tuples (from code and the command line) and lists (from yaml) compare equal."""
    return [_plain(v) for v in value] if isinstance(value, (list, tuple)) else value


def _flatten(node, prefix="") -> Dict[str, object]:
    flat = {}
    for key, value in node.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[prefix + key] = _plain(value)
    return flat


def _classify(key: str, cfg: CfgNode) -> Tuple[str, str]:
    """(kind, what happens) for a changed key."""
    if key.startswith(_BOOKKEEPING_PREFIXES):
        return "bookkeeping", "takes effect; the trained weights do not depend on it"
    if key == "SOLVER.MAX_ITER" and cfg.SOLVER.LR_SCHEDULER_NAME == "WarmupMultiStepLR":
        return "bookkeeping", "takes effect; the step schedule does not depend on it, training stays exact"
    if key in _RESTORED_KEYS:
        return "restored", "would not take effect (the checkpoint restores it): kept at the saved value"
    return "exactness", "takes effect from the next iteration; the run is no longer an exact continuation"


def _changes(saved: Dict, current: Dict, defaults: Dict) -> List[Tuple[str, object, object]]:
    changes = []
    for key in sorted(saved.keys() | current.keys()):
        old, new = saved.get(key, _ABSENT), current.get(key, _ABSENT)
        if old == new or (old is _ABSENT and new == defaults.get(key, _ABSENT)):
            continue  # a key added to the code since, at its default: not a change made by the user
        changes.append((key, old, new))
    return changes


def resolve_resumed_config(config_file: str, opts: List, allow_changes: bool) -> List:
    """``opts`` extended so that the resumed config is the one in effect (see the module docstring).

    Raises:
        ConfigChangeRefused: listing every changed key, when one breaks exactness or would not take
            effect and ``allow_changes`` is False.
    """
    cfg = load_ests_config(config_file, opts)
    checkpoint = find_resume_checkpoint(cfg.OUTPUT_DIR)
    saved_path = os.path.join(cfg.OUTPUT_DIR, "config.yaml")
    if checkpoint is None or not os.path.isfile(saved_path):
        if checkpoint is not None:
            logger.warning("%s is missing: the resumed config cannot be compared with the trained one.", saved_path)
        return list(opts)
    try:
        with open(saved_path) as f:
            saved = _flatten(CfgNode.load_cfg(f))
    except Exception as e:  # noqa: B902 - any parse error: say which file
        raise ConfigChangeRefused(
            f"{saved_path}: unreadable ({type(e).__name__}: {e}); fix or delete it to resume"
        ) from e
    changes = _changes(saved, _flatten(cfg), _flatten(_defaults()))
    if not changes:
        return list(opts)
    lines, pins, kinds = [], [], {}
    for key, old, new in changes:
        kinds[key], effect = _classify(key, cfg)
        lines.append(f"  {key}: {old!r} -> {new!r}: {effect}")
        if kinds[key] == "restored" and old is not _ABSENT:
            pins += [key, old]
    refused = [key for key, kind in kinds.items() if kind != "bookkeeping"]
    summary = f"--resume with a config that differs from {saved_path} in {len(changes)} key(s):\n" + "\n".join(lines)
    if refused and not allow_changes:
        raise ConfigChangeRefused(
            f"{summary}\nRefused ({', '.join(refused)}); pass --allow-config-change to resume anyway "
            "with the effects listed, or train in a new OUTPUT_DIR with MODEL.WEIGHTS set to the checkpoint."
        )
    logger.warning(summary)
    if "exactness" in kinds.values():
        _keep_previous_config(saved_path, checkpoint)
    return list(opts) + pins


def _defaults() -> CfgNode:
    cfg = get_cfg()
    add_ests_config(cfg)
    return cfg


def _keep_previous_config(saved_path: str, checkpoint: str) -> None:
    """Keep the config the iterations up to the checkpoint were trained with, before config.yaml is rewritten."""
    iteration = int(torch.load(checkpoint, map_location="cpu", weights_only=True, mmap=True)["iteration"])
    kept = os.path.join(os.path.dirname(saved_path), f"config_until_iter_{iteration:07d}.yaml")
    shutil.copyfile(saved_path, kept)
    logger.warning("The config of iterations 0-%d is kept in %s.", iteration, kept)
