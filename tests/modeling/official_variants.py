"""State dicts with the official names and shapes of every released ESTS variant, derived from the TT table.

``state_dict_tt_finetune.tsv`` lists the EN 5-level model. The other variants differ only where the official
code makes them differ: the number of feature levels L (``level_embed``, ``input_proj``, and the
M*L*P-sized deformable-attention projections) and the recognition classes V (``rec_cls``, ``rec_proj``).
Values are zeros (the shapes and names are what the converter checks), ``inv_freq`` is the real table.
"""
from pathlib import Path
from typing import Dict, List, Tuple

import torch

from ests_d2.modeling.official_checkpoint import official_text_pos_inv_freq
from tests.modeling.golden_weights import read_official_tsv

HEADS, POINTS, D_MODEL = 8, 4, 256
# (feature levels, recognition classes, official use_dn, parameter count given by the spec, section 10)
VARIANTS = {
    "en": (5, 97, True, 56_644_813),
    "vintext": (5, 107, True, 56_649_943),
    "mlt": (4, 4268, False, 58_421_912),
    "rects": (4, 5463, False, 59_034_947),
}


def _input_proj_rows(levels: int) -> List[Tuple[str, Tuple[int, ...]]]:
    """Official ``input_proj``: 1x1 convs from the returned ResNet stages, then one 3x3 conv on raw C5; each + GN."""
    stage_channels = [256, 512, 1024, 2048][4 - (levels - 1):]
    rows = []
    for i, cin in enumerate(stage_channels + [2048]):
        kernel = 1 if i < len(stage_channels) else 3
        rows += [(f"input_proj.{i}.0.weight", (D_MODEL, cin, kernel, kernel)), (f"input_proj.{i}.0.bias", (D_MODEL,)),
                 (f"input_proj.{i}.1.weight", (D_MODEL,)), (f"input_proj.{i}.1.bias", (D_MODEL,))]
    return rows


def _variant_shape(name: str, shape: Tuple[int, ...], levels: int, rec_classes: int) -> Tuple[int, ...]:
    if name == "transformer.level_embed":
        return (levels, D_MODEL)
    if ".sampling_offsets." in name:
        return (HEADS * levels * POINTS * 2,) + shape[1:]
    if ".attention_weights." in name:
        return (HEADS * levels * POINTS,) + shape[1:]
    if "rec_cls." in name:
        return (rec_classes,) + shape[1:]
    if name.endswith("rec_proj.weight"):
        return (D_MODEL, rec_classes)
    return shape


def official_variant_rows(tsv_path: Path, variant: str) -> List[Dict[str, object]]:
    """[{name, shape, kind, alias_of}] in official order for ``variant`` (a key of ``VARIANTS``)."""
    levels, rec_classes = VARIANTS[variant][:2]
    rows = []
    for row in read_official_tsv(tsv_path):
        name = row["name"]
        if name.startswith("input_proj."):
            if name == "input_proj.0.0.weight":  # the whole block is rebuilt for L levels, in place
                rows += [{"name": n, "shape": s, "kind": "param", "alias_of": ""} for n, s in _input_proj_rows(levels)]
            continue
        shape = tuple(int(s) for s in row["shape"].split("x"))
        rows.append({"name": name, "shape": _variant_shape(name, shape, levels, rec_classes), "kind": row["kind"],
                     "alias_of": row["alias_of"]})
    return rows


def official_variant_state_dict(tsv_path: Path, variant: str) -> Dict[str, torch.Tensor]:
    state: Dict[str, torch.Tensor] = {}
    rows = official_variant_rows(tsv_path, variant)
    for row in rows:
        if row["alias_of"]:
            continue
        if row["name"] == "transformer.decoder.text_pos_embed.inv_freq":
            state[row["name"]] = official_text_pos_inv_freq(2 * row["shape"][0])
        else:
            state[row["name"]] = torch.zeros(row["shape"])
    for row in rows:
        if row["alias_of"]:
            state[row["name"]] = state[row["alias_of"]]
    return state


def official_parameter_count(tsv_path: Path, variant: str) -> int:
    """Distinct parameters (frozen included, buffers excluded), as the spec counts them."""
    total = 0
    for row in official_variant_rows(tsv_path, variant):
        if row["kind"] == "param" and not row["alias_of"]:
            numel = 1
            for s in row["shape"]:
                numel *= s
            total += numel
    return total
