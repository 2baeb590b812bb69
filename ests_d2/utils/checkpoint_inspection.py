"""What is inside a checkpoint, and can ``--resume`` continue from it (used by tools/inspect_checkpoint.py)."""
import argparse
import os
import pickle
import re
import zipfile
from typing import Any, Dict, Iterator, List, Optional, Tuple

import torch

_ZIP_MAGIC = b"PK\x03\x04"  # torch.save's default format is a zip archive
_PICKLE_PROTO = b"\x80"  # the legacy format (_use_new_zipfile_serialization=False) is a bare pickle stream
_INCOMPLETE = "not a complete checkpoint (truncated? still being written?)"


def _check_container(path: str) -> None:
    """Raise ValueError for a file that cannot be a complete ``torch.save`` output, before unpickling anything.

    A zip archive keeps its directory at the very end, so a file cut short (a copy or a save still under
    way) has none; ``torch.load`` would then fail with an internal miniz or ``OSError`` message.
    """
    if os.path.isdir(path):
        raise ValueError(f"{path}: is a directory, not a checkpoint file")
    if os.path.getsize(path) == 0:
        raise ValueError(f"{path}: is empty (0 bytes), {_INCOMPLETE}")
    with open(path, "rb") as f:
        head = f.read(len(_ZIP_MAGIC))
    if head == _ZIP_MAGIC:
        if not zipfile.is_zipfile(path):
            raise ValueError(f"{path}: {_INCOMPLETE}: its zip archive has no central directory at the end")
    elif not head.startswith(_PICKLE_PROTO):
        raise ValueError(f"{path}: not a PyTorch checkpoint (neither torch.save's zip archive nor a legacy pickle; "
                         f"it starts with {head!r})")


def load_checkpoint(path: str) -> Dict[str, Any]:
    """Load without executing pickled code: only tensors, containers and the official ``argparse.Namespace``.

    Raises:
        FileNotFoundError: no such file.
        ValueError: a one-line reason naming ``path``: not a checkpoint, incomplete, unsafe to unpickle, or
            not a dict.
    """
    _check_container(path)
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            data = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        refused = re.search(r"Unsupported global: GLOBAL (\S+)", str(e))
        if refused is None:  # not a refused class: the pickle stream itself is broken
            raise ValueError(f"{path}: {_INCOMPLETE}: its pickle data is broken") from e
        raise ValueError(f"{path}: holds pickled objects other than tensors and plain containers "
                         f"({refused.group(1)}), not loaded for safety") from e
    except (EOFError, RuntimeError, OSError) as e:  # torch's messages for data cut short or corrupted
        raise ValueError(f"{path}: {_INCOMPLETE}: {_first_line(e)}") from e
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a dict at the top level, found {type(data).__name__}")
    return data


def _first_line(error: Exception) -> str:
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[0].split('. ')[0]}" if lines else type(error).__name__


def _walk(node: Any, prefix: str = "") -> Iterator[Tuple[str, Any]]:
    """(dotted key, value) for every entry of nested dicts."""
    if isinstance(node, dict):
        for key, value in node.items():
            name = f"{prefix}.{key}" if prefix else str(key)
            yield name, value
            yield from _walk(value, name)


def _find(data: Dict, last_key: str) -> Optional[Tuple[str, Any]]:
    """The shallowest entry whose key is ``last_key``."""
    hits = [(k, v) for k, v in _walk(data) if k.split(".")[-1] == last_key]
    return min(hits, key=lambda kv: kv[0].count(".")) if hits else None


def _is_state_dict(node: Any) -> bool:
    return isinstance(node, dict) and bool(node) and all(torch.is_tensor(v) for v in node.values())


def _find_scheduler(data: Dict) -> Optional[Dict[str, Any]]:
    """Where the LR scheduler state is (the official ``lr_scheduler``, or a detectron2 hook such as
    ``trainer.hooks.LRScheduler``) with its step count and base learning rates."""
    hits = [(k, v) for k, v in _walk(data) if "scheduler" in k.split(".")[-1].lower() and isinstance(v, dict)]
    if not hits:
        return None
    where, state = min(hits, key=lambda kv: kv[0].count("."))
    return {"where": where, "last_epoch": state.get("last_epoch"), "base_lrs": state.get("base_lrs"),
            "milestones": sorted(state["milestones"]) if isinstance(state.get("milestones"), (dict, list)) else None}


def describe_checkpoint(data: Dict[str, Any]) -> Dict[str, Any]:
    """A plain summary: format, keys, iteration, parameters, optimizer, AMP, RNG, data position, resume verdict."""
    weights, fmt = _weights_and_format(data)
    summary: Dict[str, Any] = {
        "format": fmt,
        "top_level_keys": sorted(data) if "model" in data else ["<state_dict>"],
        "tensors": len(weights),
        "parameters_and_buffers": _unique_element_count(weights),
    }
    trainer = data.get("trainer")
    summary["iteration"] = data.get("iteration", trainer.get("iteration") if isinstance(trainer, dict) else None)
    summary["epoch"] = data.get("epoch")
    summary["optimizer"], summary["trainable_parameters"] = _optimizer_summary(data)
    scaler = _find(data, "grad_scaler")
    has_scale = scaler and isinstance(scaler[1], dict) and "scale" in scaler[1]
    summary["grad_scaler_scale"] = float(scaler[1]["scale"]) if has_scale else None
    summary["scheduler"] = _find_scheduler(data)
    rng = _find(data, "rng")
    summary["rng_states"] = sorted(rng[1]) if rng and isinstance(rng[1], dict) else None
    for field, key in (("data_position_batches", "batches_consumed"), ("data_seed", "data_seed"),
                       ("dataset_size", "dataset_size")):
        found = _find(data, key)
        summary[field] = int(found[1]) if found and isinstance(found[1], (int, float)) else None
    counters = _find(data, "counters")
    summary["skip_counters"] = dict(counters[1]) if counters and isinstance(counters[1], dict) else None
    history = _find(data, "history")
    summary["metric_history"] = len(history[1]) if history and isinstance(history[1], dict) else None
    args = data.get("args")
    if isinstance(args, argparse.Namespace):
        wanted = ("dataset_file", "lr", "lr_backbone", "batch_size", "epochs", "lr_drop", "num_queries", "voc_size")
        summary["official_args"] = {k: getattr(args, k) for k in wanted if hasattr(args, k)}
    summary["resume"] = resume_verdict(summary)
    return summary


def _weights_and_format(data: Dict[str, Any]):
    """(the model's state dict, what kind of file holds it)."""
    if "model" in data and isinstance(data["model"], dict):
        weights = data["model"]
    elif _is_state_dict(data):
        weights = data
    else:
        raise ValueError(f"no model weights found (neither a 'model' entry nor a bare state_dict); "
                         f"top-level keys: {sorted(map(str, data))}")
    # The official backbone is a torchvision ResNet under "backbone.0.body."; ours is detectron2's
    # ("backbone.stem", "backbone.res2"...). The transformer names are the same in both, so they cannot tell.
    official_names = any(n.startswith("backbone.0.body.") for n in weights)
    if official_names or {"epoch", "args", "lr_scheduler"} & set(data):
        fmt = "official ESTS checkpoint" if "model" in data else "official ESTS state_dict (bare)"
    elif "model" in data:
        fmt = "ests-d2 / detectron2 checkpoint"
    else:
        fmt = "bare state_dict"
    return weights, fmt


def _unique_element_count(weights: Dict[str, Any]) -> int:
    """Floating-point elements; aliased tensors (the official shared heads) share storage: each counted once."""
    seen, total = set(), 0
    for t in weights.values():
        if torch.is_tensor(t) and t.is_floating_point():
            key = (t.untyped_storage().data_ptr(), t.storage_offset(), t.numel())
            if key not in seen:
                seen.add(key)
                total += t.numel()
    return total


def _optimizer_summary(data: Dict[str, Any]):
    """(optimizer summary or None, trainable parameter count or None)."""
    optimizer = _find(data, "optimizer")
    if not (optimizer and isinstance(optimizer[1], dict) and "param_groups" in optimizer[1]):
        return None, None
    opt = optimizer[1]
    state = opt.get("state", {})
    first = next(iter(state.values()), {})
    if "exp_avg" in first:
        decoupled = any(g.get("decoupled_weight_decay") for g in opt["param_groups"])
        kind = "AdamW" if decoupled else "Adam/AdamW"
    else:
        kind = "SGD" if "momentum_buffer" in first else "unknown"
    summary = {
        "where": optimizer[0],
        "type": kind,
        "learning_rates": [g.get("lr") for g in opt["param_groups"]],
        "weight_decay": [g.get("weight_decay") for g in opt["param_groups"]],
        "params_per_group": [len(g.get("params", [])) for g in opt["param_groups"]],
        "steps_taken": int(first["step"]) if "step" in first else None,
    }
    # Moments have the shape of their parameter: their size is the trainable parameter count.
    trainable = sum(s["exp_avg"].numel() for s in state.values() if "exp_avg" in s) or None
    return summary, trainable


def resume_verdict(summary: Dict[str, Any]) -> str:
    """One sentence: whether ``--resume`` continues this run, and how faithfully."""
    if summary["format"].startswith("official"):
        return ("no: an official ESTS checkpoint cannot be resumed here; convert it with "
                "tools/convert_official_weights.py and start from it with MODEL.WEIGHTS")
    if summary["iteration"] is None:
        return "no: weights only (no iteration); use it as MODEL.WEIGHTS to start a new run"
    missing: List[str] = []
    if summary["optimizer"] is None:
        missing.append("optimizer state (AdamW moments restart from zero)")
    if summary["scheduler"] is None:
        missing.append("LR scheduler")
    if summary["rng_states"] is None:
        missing.append("RNG states")
    if summary["data_position_batches"] is None:
        missing.append("data position")
    if not missing:
        return f"yes: --resume continues exactly after iteration {summary['iteration']}"
    return f"partly: --resume continues at iteration {summary['iteration']} but lacks " + ", ".join(missing)
