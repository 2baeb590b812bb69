"""The ESTS inference network as one traceable module: normalised image in, final-layer predictions out.

``ExportableESTS`` runs the submodules of a built ``ESTS`` model (backbone, projections, encoder layers,
heads, decoder) in the order of ``ESTS.network`` for one unpadded image, and replaces only what does not
trace (see ``ops``): deformable attention sampling, RoI pooling, and the size arithmetic that eager code does
with Python ints (``torch.linspace(.., h)``), which tracing would freeze at the sample image's size.
"""
import copy
from typing import List, Tuple

import torch
from torch import nn

from ..modeling.meta_arch import ESTS
from ..modeling.ms_deform_attn import MSDeformAttn
from ..modeling.encoder import encoder_reference_points
from ..modeling.transformer import encoder_proposals, valid_ratios_of
from .ops import ExportDeformAttn, roi_features_for_export

__all__ = ["ExportableESTS", "OUTPUT_NAMES", "ExportError", "check_exportable"]

# graph outputs, in order (docs/EXPORT.md)
OUTPUT_NAMES = ("pred_logits", "pred_boxes", "pred_beziers", "pred_rec", "topk_index")


class ExportError(ValueError):
    """A configuration or model that cannot be exported; the message names the option."""


def check_exportable(cfg) -> None:
    """Raise ``ExportError`` naming the first config option the ONNX export does not support."""
    if cfg.MODEL.META_ARCHITECTURE != "ESTS":
        raise ExportError(f"MODEL.META_ARCHITECTURE is '{cfg.MODEL.META_ARCHITECTURE}': only ESTS is exported")
    if cfg.MODEL.BACKBONE.NAME != "build_resnet_backbone":
        raise ExportError(f"MODEL.BACKBONE.NAME '{cfg.MODEL.BACKBONE.NAME}' is not exported: only "
                          "build_resnet_backbone is (other backbones are untested)")
    if any(cfg.MODEL.RESNETS.DEFORM_ON_PER_STAGE):
        raise ExportError("MODEL.RESNETS.DEFORM_ON_PER_STAGE enables deformable convolutions, a detectron2 C++ "
                          "op with no ONNX equivalent: export a model without them")
    if cfg.TEST.AUG.ENABLED:
        raise ExportError("TEST.AUG.ENABLED: test-time augmentation runs outside the network and is not part of "
                          "the exported pipeline; disable it")


def _swap_deformable_attention(module: nn.Module) -> int:
    """Replace every ``MSDeformAttn`` below ``module`` by an ``ExportDeformAttn`` sharing its parameters."""
    swapped = 0
    for parent in list(module.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, MSDeformAttn):
                setattr(parent, name, ExportDeformAttn(child))
                swapped += 1
    return swapped


class ExportableESTS(nn.Module):
    """Inference network of one ESTS model for ONNX export (a copy: the given model is left untouched).

    ``forward(image)``: ``image`` (1, 3, H, W) float32, normalised as ``ESTS.normalize`` (no padding).
    Returns the tuple ``OUTPUT_NAMES``: final decoder layer ``pred_logits`` (1, Nq, C), ``pred_boxes`` (1, Nq, 4)
    sigmoid cxcywh, ``pred_beziers`` (1, Nq, 32), ``pred_rec`` (1, Nq, T, V) logits, and ``topk_index``
    (1, Nq) int64, the encoder tokens the queries were selected from.
    """

    def __init__(self, model: ESTS):
        super().__init__()
        if not isinstance(model, ESTS):
            raise ExportError(f"only ESTS models are exported, got {type(model).__name__}")
        model = copy.deepcopy(model).eval()
        model.criterion = model.denoising = None  # training-only parts
        _swap_deformable_attention(model.transformer)
        self.model = model

    def forward(self, image: torch.Tensor):
        model, transformer = self.model, self.model.transformer
        mask = torch.zeros_like(image[:, 0], dtype=torch.bool)  # one unpadded image
        srcs, masks, pos = model._multiscale_features(image, mask)
        spatial_shapes: List[Tuple] = [src.shape[-2:] for src in srcs]
        mask_flat = torch.cat([m.flatten(1) for m in masks], 1)
        pos_flat = torch.cat([p.flatten(2).transpose(1, 2) + transformer.level_embed[lvl].view(1, 1, -1)
                              for lvl, p in enumerate(pos)], 1)
        valid_ratios = torch.stack([valid_ratios_of(m) for m in masks], 1)
        memory = self._encode(torch.cat([src.flatten(2).transpose(1, 2) for src in srcs], 1), pos_flat,
                              spatial_shapes, valid_ratios, mask_flat)
        output_memory, proposals = encoder_proposals(memory, mask_flat, spatial_shapes)
        output_memory = transformer.enc_output_norm(transformer.enc_output(output_memory))
        class_logits = transformer.enc_out_class_embed(output_memory)
        topk_index = torch.topk(class_logits.max(-1)[0], transformer.num_queries, dim=1)[1]
        # the box head on the selected tokens only (the eager model runs it on all S and keeps Nq of them)
        selected = torch.gather(output_memory, 1, topk_index[..., None].expand(-1, -1, output_memory.shape[-1]))
        anchors = transformer.enc_out_bbox_embed(selected) + torch.gather(proposals, 1,
                                                                          topk_index[..., None].expand(-1, -1, 4))
        content = transformer.tgt_embed.weight[None].expand(image.shape[0], -1, -1)
        roi_features, _ = roi_features_for_export(transformer, srcs[: transformer.num_roi_levels], anchors,
                                                  spatial_shapes[0], valid_ratios[:, 0])
        last = transformer.decoder(content, roi_features, anchors, memory, spatial_shapes, valid_ratios,
                                   mask_flat)[-1]
        return last["pred_logits"], last["pred_boxes"], last["pred_beziers"], last["pred_rec"], topk_index

    def _encode(self, src, pos, spatial_shapes, valid_ratios, padding_mask):
        """``DeformableEncoder.forward`` for an unpadded image (every token is a query)."""
        reference_points = encoder_reference_points(spatial_shapes, valid_ratios)
        output = src
        for layer in self.model.transformer.encoder.layers:
            output, _ = layer(output, pos, reference_points, spatial_shapes, padding_mask)
        return output.masked_fill(padding_mask[..., None], 0.0)
