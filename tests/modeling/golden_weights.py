"""Regenerates the golden parity weights (golden/README.md, "Weight recipe") keyed by official names.

The recipe fills the entries of ``docs/state_dict_tt_finetune.tsv`` in file order from one CPU
``torch.Generator`` (uniform draws only), then points every alias at its source tensor.
"""
import csv
import hashlib
import math
from pathlib import Path
from typing import Dict, List, Tuple

import torch

from ests_d2.modeling.official_checkpoint import official_text_pos_inv_freq

RECIPE_SEED = 44
_TEXT_POS_KEY = "transformer.decoder.text_pos_embed.inv_freq"
_SMALL_LAST_LAYERS = ("transformer.decoder.bbox_embed.0.layers.2.weight", "beziers_embed.0.layers.2.weight")
_EMBEDDINGS = ("transformer.level_embed", "transformer.tgt_embed.weight", "label_enc.weight")


def read_official_tsv(path: Path) -> List[Dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f, delimiter="\t"))


def recipe_bounds(name: str, shape: Tuple[int, ...]) -> Tuple[float, float]:
    """(lo, hi) of the uniform draw of one tensor: the first matching rule of the recipe table."""
    if len(shape) == 4:
        a = math.sqrt(6 / (shape[1] * shape[2] * shape[3]))
        return -a, a
    if name.startswith("backbone."):
        if name.endswith("running_mean"):
            return -0.1, 0.1
        if name.endswith("running_var"):
            return 0.5, 1.5
        if name.endswith("bn3.weight"):
            return 0.1, 0.3
        if name.endswith("weight"):
            return 0.5, 1.5
        return -0.1, 0.1
    if len(shape) == 2:
        if name in _EMBEDDINGS:
            return -math.sqrt(3), math.sqrt(3)
        a = math.sqrt(6 / (shape[0] + shape[1]))
        return (-0.3 * a, 0.3 * a) if name in _SMALL_LAST_LAYERS else (-a, a)
    if name.endswith("weight"):
        return 0.9, 1.1
    return -0.1, 0.1


def official_recipe_state_dict(tsv_path: Path, seed: int = RECIPE_SEED) -> Dict[str, torch.Tensor]:
    """The 783 official entries (aliases share storage with their source), as the recipe builds them."""
    rows = read_official_tsv(tsv_path)
    generator = torch.Generator(device="cpu")
    generator.manual_seed(seed)
    state: Dict[str, torch.Tensor] = {}
    for row in rows:
        if row["alias_of"]:
            continue
        shape = tuple(int(s) for s in row["shape"].split("x"))
        if row["name"] == _TEXT_POS_KEY:
            state[row["name"]] = official_text_pos_inv_freq(2 * shape[0])
            continue
        lo, hi = recipe_bounds(row["name"], shape)
        draws = torch.rand(shape, generator=generator, dtype=torch.float32)
        state[row["name"]] = draws * (hi - lo) + lo
    for row in rows:
        if row["alias_of"]:
            state[row["name"]] = state[row["alias_of"]]
    return state


def tensor_sha256_prefix(tensor: torch.Tensor, length: int = 16) -> str:
    """sha256 of the little-endian float32 bytes (how weights_checksums.json fingerprints a tensor)."""
    data = tensor.detach().to(torch.float32).contiguous().numpy().astype("<f4").tobytes()
    return hashlib.sha256(data).hexdigest()[:length]
