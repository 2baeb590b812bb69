"""Conversion between the official ESTextSpotter state_dict and this project's ``ESTS`` model.

Official names differ from ours in three ways:

- the backbone is torchvision's ResNet (``backbone.0.body.layer1.0.conv1``), ours detectron2's
  (``backbone.res2.0.conv1``);
- every shared head is stored under several names (122 aliases of the same tensors:
  ``class_embed.{0..5}``, ``bbox_embed.{0..5}``, ``transformer.decoder.{class,bbox}_embed.{0..5}``,
  ``beziers_embed.{0..5}``, ``transformer.{rec_cls,rec_proj}``); ours holds each head once, in the decoder;
- the text position table ``transformer.decoder.text_pos_embed.inv_freq`` is a deterministic buffer
  that we recompute instead of storing.
"""
import re
from dataclasses import dataclass, field
from typing import Dict, List, Mapping, Tuple

import torch

__all__ = [
    "ConversionReport", "convert_official_state_dict", "to_official_state_dict", "check_against_model",
    "official_text_pos_inv_freq", "OFFICIAL_VARIANTS", "official_model_facts", "identify_official_variant",
    "check_official_against_config",
]

_BACKBONE_PREFIX = "backbone.0.body."
_TEXT_POS_KEY = "transformer.decoder.text_pos_embed.inv_freq"

# (pattern of the official names of one shared head, our prefix); group(1) is the parameter suffix.
_SHARED_HEADS: List[Tuple[re.Pattern, str]] = [
    (re.compile(r"^(?:transformer\.decoder\.)?bbox_embed\.\d+\.(.+)$"), "transformer.decoder.bbox_embed."),
    (re.compile(r"^(?:transformer\.decoder\.)?class_embed\.\d+\.(.+)$"), "transformer.decoder.class_embed."),
    (re.compile(r"^beziers_embed\.\d+\.(.+)$"), "transformer.decoder.polygon_embed."),
    (re.compile(r"^transformer\.(?:decoder\.)?rec_cls\.(.+)$"), "transformer.decoder.rec_cls."),
    (re.compile(r"^transformer\.(?:decoder\.)?rec_proj\.(.+)$"), "transformer.decoder.rec_proj."),
]
# the official name we write for each of our shared heads (the first, non-alias entry of the official file)
_CANONICAL_OFFICIAL = {
    "transformer.decoder.bbox_embed.": "transformer.decoder.bbox_embed.0.",
    "transformer.decoder.class_embed.": "transformer.decoder.class_embed.0.",
    "transformer.decoder.polygon_embed.": "beziers_embed.0.",
    "transformer.decoder.rec_cls.": "transformer.decoder.rec_cls.",
    "transformer.decoder.rec_proj.": "transformer.decoder.rec_proj.",
}


def official_text_pos_inv_freq(d_model: int = 256) -> torch.Tensor:
    """The official ``inv_freq`` buffer: 1 / 10000^(2j / d_model), j < d_model / 2."""
    return 1.0 / (10000 ** (torch.arange(0, d_model, 2).float() / d_model))


def _backbone_official_to_ours(name: str) -> str:
    """``backbone.0.body.layer1.0.bn2.weight`` -> ``backbone.res2.0.conv2.norm.weight`` (detectron2 ResNet)."""
    rest = name[len(_BACKBONE_PREFIX):]
    rest = re.sub(r"^conv1\.", "stem.conv1.", rest)
    rest = re.sub(r"^bn1\.", "stem.conv1.norm.", rest)
    rest = re.sub(r"^layer(\d)\.", lambda m: f"res{int(m.group(1)) + 1}.", rest)
    rest = re.sub(r"\.bn(\d)\.", r".conv\1.norm.", rest)
    rest = rest.replace(".downsample.0.", ".shortcut.").replace(".downsample.1.", ".shortcut.norm.")
    return "backbone." + rest


def _backbone_ours_to_official(name: str) -> str:
    rest = name[len("backbone."):]
    rest = re.sub(r"^stem\.conv1\.norm\.", "bn1.", rest)
    rest = re.sub(r"^stem\.conv1\.", "conv1.", rest)
    rest = re.sub(r"^res(\d)\.", lambda m: f"layer{int(m.group(1)) - 1}.", rest)
    rest = re.sub(r"\.conv(\d)\.norm\.", r".bn\1.", rest)
    rest = rest.replace(".shortcut.norm.", ".downsample.1.").replace(".shortcut.", ".downsample.0.")
    return _BACKBONE_PREFIX + rest


@dataclass
class ConversionReport:
    """What a conversion did, in words a user can act on."""

    num_converted: int = 0
    aliases_merged: List[str] = field(default_factory=list)  # official alias names folded into one tensor
    dropped_buffers: List[str] = field(default_factory=list)  # recomputed by our model
    unmapped: List[str] = field(default_factory=list)  # official names we do not know

    def summary(self) -> str:
        lines = [f"converted {self.num_converted} tensors, merged {len(self.aliases_merged)} aliases of shared heads"]
        if self.dropped_buffers:
            lines.append(f"dropped {len(self.dropped_buffers)} recomputed buffer(s): {', '.join(self.dropped_buffers)}")
        if self.unmapped:
            lines.append(f"{len(self.unmapped)} official key(s) have no counterpart and were skipped: "
                         + ", ".join(self.unmapped))
        return "\n".join(lines)


def _map_name(name: str):
    """Our name for an official name, or None when unknown. Second value: True for shared-head names."""
    if name.startswith(_BACKBONE_PREFIX):
        return _backbone_official_to_ours(name), False
    for pattern, ours in _SHARED_HEADS:
        match = pattern.match(name)
        if match:
            return ours + match.group(1), True
    if name.startswith(("transformer.", "input_proj.", "label_enc.")):
        return name, False
    return None, False


def convert_official_state_dict(
    official: Mapping[str, torch.Tensor],
) -> Tuple[Dict[str, torch.Tensor], ConversionReport]:
    """Official ``model.state_dict()`` -> our ``ESTS`` state_dict.

    Aliases of a shared head must hold identical values (they are one tensor in the official model);
    a checkpoint where they differ was not produced by the official code and is rejected.

    Raises:
        ValueError: aliases with different values, or the computed ``inv_freq`` buffer differs.
    """
    report = ConversionReport()
    ours: Dict[str, torch.Tensor] = {}
    source: Dict[str, str] = {}
    for name, tensor in official.items():
        if name == _TEXT_POS_KEY:
            expected = official_text_pos_inv_freq(2 * tensor.numel())
            if not torch.allclose(tensor.float().cpu(), expected, rtol=1e-6, atol=0):
                raise ValueError(f"'{name}' does not hold the standard 1-D sine frequencies; this checkpoint "
                                 "uses a text position table the model cannot reproduce")
            report.dropped_buffers.append(name)
            continue
        target, shared = _map_name(name)
        if target is None:
            report.unmapped.append(name)
            continue
        if target in ours:
            if not shared:
                raise ValueError(f"official keys '{source[target]}' and '{name}' both map to '{target}'")
            if ours[target].shape != tensor.shape or not torch.equal(ours[target], tensor):
                raise ValueError(
                    f"'{name}' should be an alias of '{source[target]}' (one shared head) but holds different "
                    "values; the checkpoint was not saved by the official model"
                )
            report.aliases_merged.append(name)
            continue
        ours[target] = tensor
        source[target] = name
    report.num_converted = len(ours)
    return ours, report


def to_official_state_dict(ours: Mapping[str, torch.Tensor], num_decoder_layers: int = 6) -> Dict[str, torch.Tensor]:
    """Our state_dict -> the official names, with every alias (used for round trips and exporting)."""
    official: Dict[str, torch.Tensor] = {}
    d_model = None
    for name, tensor in ours.items():
        if name.startswith("backbone."):
            official[_backbone_ours_to_official(name)] = tensor
            continue
        prefix = next((p for p in _CANONICAL_OFFICIAL if name.startswith(p)), None)
        if prefix is None:
            official[name] = tensor
            if name == "transformer.level_embed":
                d_model = tensor.shape[1]
            continue
        suffix = name[len(prefix):]
        head = prefix.split(".")[-2]
        if head in ("bbox_embed", "class_embed"):
            for i in range(num_decoder_layers):
                official[f"transformer.decoder.{head}.{i}.{suffix}"] = tensor
                official[f"{head}.{i}.{suffix}"] = tensor
        elif head == "polygon_embed":
            for i in range(num_decoder_layers):
                official[f"beziers_embed.{i}.{suffix}"] = tensor
        else:  # rec_cls / rec_proj are registered on the transformer and on its decoder
            official[f"transformer.decoder.{head}.{suffix}"] = tensor
            official[f"transformer.{head}.{suffix}"] = tensor
    if d_model is not None:
        official[_TEXT_POS_KEY] = official_text_pos_inv_freq(d_model)
    return official


def check_against_model(converted: Mapping[str, torch.Tensor], model_state: Mapping[str, torch.Tensor]) -> List[str]:
    """Human-readable problems that would make ``load_state_dict(strict=True)`` fail (empty list: none).

    The recognition vocabulary size is reported as such (the most common mismatch: a checkpoint trained
    for another language).
    """
    problems = []
    rec_key = "transformer.decoder.rec_cls.weight"
    vocab_keys = {rec_key, "transformer.decoder.rec_cls.bias", "transformer.decoder.rec_proj.weight"}
    vocab_mismatch = (rec_key in converted and rec_key in model_state
                      and converted[rec_key].shape != model_state[rec_key].shape)
    if vocab_mismatch:
        problems.append(
            f"recognition vocabulary mismatch: the checkpoint has {converted[rec_key].shape[0]} recognition classes, "
            f"the model {model_state[rec_key].shape[0]} (set MODEL.ESTS.VOC_SIZE / CUSTOM_DICT to the checkpoint's "
            "vocabulary)"
        )
    missing = sorted(set(model_state) - set(converted))
    unexpected = sorted(set(converted) - set(model_state))
    if missing:
        problems.append(f"{len(missing)} model key(s) missing from the checkpoint: {', '.join(missing)}")
    if unexpected:
        problems.append(f"{len(unexpected)} checkpoint key(s) the model does not have: {', '.join(unexpected)}")
    for name in sorted(set(model_state) & set(converted)):
        if vocab_mismatch and name in vocab_keys:
            continue
        if tuple(converted[name].shape) != tuple(model_state[name].shape):
            problems.append(f"shape mismatch for '{name}': checkpoint {tuple(converted[name].shape)}, "
                            f"model {tuple(model_state[name].shape)}")
    return problems


@dataclass(frozen=True)
class OfficialVariant:
    """One released official model family and the ests-d2 config that builds it."""

    name: str
    feature_levels: int
    rec_classes: int
    denoising: bool
    config: str


OFFICIAL_VARIANTS = (
    OfficialVariant("EN (pretrain / joint / Total-Text / CTW1500 / ICDAR2015)", 5, 97, True,
                    "configs/ESTS/TotalText.yaml"),
    OfficialVariant("VinText (Vietnamese)", 5, 107, True, "configs/ESTS/VinText-Finetune.yaml"),
    OfficialVariant("ReCTS (Chinese)", 4, 5463, False, "configs/ESTS/ReCTS-Finetune.yaml"),
    OfficialVariant("MLT (multilingual)", 4, 4268, False, "configs/ESTS/MLT-Finetune.yaml"),
)


def official_model_facts(official: Mapping[str, torch.Tensor]) -> Dict[str, int]:
    """What an official state_dict says about its model: feature levels, box classes, recognition classes."""
    facts = {}
    for key, name, dim in (("feature_levels", "transformer.level_embed", 0),
                           ("box_classes", "transformer.decoder.class_embed.0.weight", 0),
                           ("rec_classes", "transformer.decoder.rec_cls.weight", 0)):
        if name in official:
            facts[key] = int(official[name].shape[dim])
    return facts


def identify_official_variant(facts: Mapping[str, int]):
    """The official variant with these feature levels and recognition classes, or None."""
    return next((v for v in OFFICIAL_VARIANTS if (v.feature_levels, v.rec_classes)
                 == (facts.get("feature_levels"), facts.get("rec_classes"))), None)


def check_official_against_config(facts: Mapping[str, int], cfg, training_args=None) -> List[str]:
    """Problems between an official checkpoint (``official_model_facts`` + its saved ``args``) and a config.

    Checked: feature levels (and backbone stages), box classes, recognition classes, and -- when the
    checkpoint carries its training ``args`` -- that denoising is on exactly when the official run used it.
    """
    e, problems = cfg.MODEL.ESTS, []
    levels = facts.get("feature_levels")
    if levels is not None and levels != e.NUM_FEATURE_LEVELS:
        problems.append(f"the checkpoint has {levels} feature levels, the config {e.NUM_FEATURE_LEVELS} "
                        "(MODEL.ESTS.NUM_FEATURE_LEVELS)")
    stages = len(cfg.MODEL.RESNETS.OUT_FEATURES)
    if levels is not None and stages != levels - 1:
        problems.append(f"a {levels}-level model reads {levels - 1} backbone stages (the rest is one extra "
                        f"stride-2 level); MODEL.RESNETS.OUT_FEATURES lists {stages}")
    if facts.get("box_classes") not in (None, e.NUM_CLASSES):
        problems.append(f"the checkpoint has {facts['box_classes']} box classes, the config {e.NUM_CLASSES} "
                        "(MODEL.ESTS.NUM_CLASSES)")
    if facts.get("rec_classes") not in (None, e.VOC_SIZE):
        problems.append(f"the checkpoint has {facts['rec_classes']} recognition classes, the config {e.VOC_SIZE} "
                        "(MODEL.ESTS.VOC_SIZE / VOCABULARY / CUSTOM_DICT)")
    use_dn = getattr(training_args, "use_dn", None)
    if use_dn is not None and bool(use_dn) != bool(e.DN.ENABLED):
        problems.append(f"the official run trained {'with' if use_dn else 'without'} denoising (args.use_dn="
                        f"{use_dn}) but MODEL.ESTS.DN.ENABLED is {e.DN.ENABLED}")
    variant = identify_official_variant(facts)
    if problems and variant is not None:
        problems.append(f"this is the official {variant.name} model: use {variant.config}")
    return problems
