"""The ESTS meta-architecture: detectron2 batched inputs in, losses (training) or text instances out."""
from typing import Dict, List, Optional

import torch
import torch.nn.functional as F
from detectron2.config import configurable
from detectron2.modeling import META_ARCH_REGISTRY, build_backbone
from detectron2.structures import ImageList, Instances
from detectron2.utils.events import get_event_storage
from torch import nn

from ..structures import CharVocabulary, build_vocabulary
from .criterion import ESTSCriterion
from .denoising import build_denoising, split_denoising_outputs
from .postprocess import ESTSPostProcess, result_to_instances
from .position_encoding import PositionEmbeddingSine2D
from .transformer import ESTSTransformer

__all__ = ["ESTS"]


def _log_unweighted_terms(terms: Dict[str, torch.Tensor]):
    """Send the logged-only criterion terms (class_error, ...) to the event storage, when training runs in one."""
    try:
        storage = get_event_storage()
    except AssertionError:  # no EventStorage context (e.g. a plain forward in a test)
        return
    storage.put_scalars(**{k: float(v) for k, v in terms.items()}, smoothing_hint=False)


@META_ARCH_REGISTRY.register()
class ESTS(nn.Module):
    """ESTextSpotter: ResNet backbone -> multi-scale projection -> ESTS transformer -> shared heads.

    ``forward`` follows detectron2: a list of dicts with a uint8 ``image`` (and ``instances`` in training).
    ``official_forward`` runs the network on already-normalised images and returns the official output dict
    (what the criterion, the post-processing and the parity checks consume).
    """

    @configurable
    def __init__(self, *, backbone: nn.Module, in_features: List[str], transformer: ESTSTransformer,
                 num_feature_levels: int, pixel_mean, pixel_std, pe_temperature: float,
                 vocabulary: CharVocabulary, num_classes: int, criterion: Optional[nn.Module] = None,
                 denoising: Optional[nn.Module] = None, postprocess=None):
        """
        Args:
            backbone: detectron2 backbone whose ``in_features`` outputs feed the transformer.
            transformer: encoder / query selection / decoder with the shared heads.
            num_feature_levels: L; levels beyond ``in_features`` are stride-2 3x3 convolutions, the first on
                the raw last backbone map, the next ones on the previous projected level.
            pixel_mean, pixel_std: per-channel statistics in 0..255 units, in the input channel order.
            pe_temperature: temperature of the 2-D sine position encoding.
            vocabulary: recognition classes (decoding of ``texts``).
            num_classes: box classes of the official head (its label embedding has one more row).
            criterion: training losses (``ESTSCriterion``); denoising: DN query builder (training);
            postprocess: callable (outputs, target sizes) -> per-image result dicts (inference).
        """
        super().__init__()
        self.backbone = backbone
        self.in_features = list(in_features)
        self.transformer = transformer
        self.num_feature_levels = num_feature_levels
        d_model = transformer.d_model
        shapes = backbone.output_shape()
        in_channels = [shapes[f].channels for f in self.in_features]
        if num_feature_levels < len(in_channels):
            raise ValueError(
                f"MODEL.ESTS.NUM_FEATURE_LEVELS ({num_feature_levels}) is smaller than the number of backbone "
                f"features {self.in_features}"
            )
        projections = [nn.Sequential(nn.Conv2d(c, d_model, kernel_size=1), nn.GroupNorm(32, d_model))
                       for c in in_channels]
        extra_in = in_channels[-1]
        for _ in range(num_feature_levels - len(in_channels)):
            projections.append(nn.Sequential(nn.Conv2d(extra_in, d_model, kernel_size=3, stride=2, padding=1),
                                             nn.GroupNorm(32, d_model)))
            extra_in = d_model
        self.input_proj = nn.ModuleList(projections)
        for proj in self.input_proj:
            nn.init.xavier_uniform_(proj[0].weight, gain=1)
            nn.init.zeros_(proj[0].bias)
        self.position_encoding = PositionEmbeddingSine2D(d_model // 2, temperature=pe_temperature)
        # DN label content (C + 1 rows: the official label book has one spare entry)
        self.label_enc = nn.Embedding(num_classes + 1, d_model)
        self.vocabulary = vocabulary
        self.criterion = criterion
        self.denoising = denoising
        self.postprocess = postprocess
        # normalise as the official ToTensor + Normalize: (u8 / 255 - mean) / std, mean/std in 0..1 units
        mean01 = torch.tensor(pixel_mean, dtype=torch.float64) / 255
        std01 = torch.tensor(pixel_std, dtype=torch.float64) / 255
        self.register_buffer("pixel_mean01", mean01.float().view(-1, 1, 1), persistent=False)
        self.register_buffer("pixel_std01", std01.float().view(-1, 1, 1), persistent=False)

    @classmethod
    def from_config(cls, cfg):
        e = cfg.MODEL.ESTS
        backbone = build_backbone(cfg)
        transformer = ESTSTransformer(
            d_model=e.HIDDEN_DIM, nhead=e.NHEADS, num_encoder_layers=e.ENC_LAYERS, num_decoder_layers=e.DEC_LAYERS,
            dim_feedforward=e.DIM_FEEDFORWARD, dropout=e.DROPOUT, num_feature_levels=e.NUM_FEATURE_LEVELS,
            enc_n_points=e.ENC_N_POINTS, dec_n_points=e.DEC_N_POINTS, num_queries=e.NUM_QUERIES,
            num_classes=e.NUM_CLASSES, voc_size=e.VOC_SIZE, max_text_len=e.MAX_TEXT_LEN,
            roi_output_size=tuple(e.ROI_OUTPUT_SIZE), attn_fp32=e.DEFORM_ATTN_FP32,
            attn_recompute=e.DEFORM_ATTN_RECOMPUTE, ffn_recompute=e.FFN_RECOMPUTE,
            activation_checkpoint=e.ACTIVATION_CHECKPOINT,
        )
        return {
            "backbone": backbone,
            "in_features": cfg.MODEL.RESNETS.OUT_FEATURES,
            "transformer": transformer,
            "num_feature_levels": e.NUM_FEATURE_LEVELS,
            "pixel_mean": cfg.MODEL.PIXEL_MEAN,
            "pixel_std": cfg.MODEL.PIXEL_STD,
            "pe_temperature": e.PE_TEMPERATURE,
            "vocabulary": build_vocabulary(cfg),
            "num_classes": e.NUM_CLASSES,
            "criterion": ESTSCriterion(cfg),
            "denoising": build_denoising(cfg),
            "postprocess": ESTSPostProcess(cfg),
        }

    @property
    def device(self) -> torch.device:
        return self.pixel_mean01.device

    # ------------------------------------------------------------------------------------------------
    def normalize(self, image: torch.Tensor) -> torch.Tensor:
        """uint8 (3, H, W) -> float32 network input (official operation order, bit-exact)."""
        return (image.to(self.device).float() / 255 - self.pixel_mean01) / self.pixel_std01

    @staticmethod
    def batch_images(images: List[torch.Tensor]):
        """Zero-pad to the largest size (top-left aligned, no size divisibility).

        Returns:
            ImageList and the (B, H, W) bool padding mask (True on padding).
        """
        image_list = ImageList.from_tensors(images, size_divisibility=0, pad_value=0.0)
        batch, _, height, width = image_list.tensor.shape
        mask = torch.ones((batch, height, width), dtype=torch.bool, device=image_list.tensor.device)
        for i, (h, w) in enumerate(image_list.image_sizes):
            mask[i, :h, :w] = False
        return image_list, mask

    def _multiscale_features(self, images: torch.Tensor, mask: torch.Tensor):
        """Projected maps, padding masks (nearest-downsampled from the image mask) and position encodings."""
        features = self.backbone(images)
        srcs = [proj(features[name]) for proj, name in zip(self.input_proj, self.in_features)]
        extra_input = features[self.in_features[-1]]
        for proj in self.input_proj[len(self.in_features):]:
            srcs.append(proj(extra_input))
            extra_input = srcs[-1]
        mask_float = mask[None].float()
        masks = [F.interpolate(mask_float, size=src.shape[-2:]).to(torch.bool)[0] for src in srcs]
        pos = [self.position_encoding(m).to(src.dtype) for m, src in zip(masks, srcs)]
        return srcs, masks, pos

    def network(self, images: torch.Tensor, mask: torch.Tensor, dn_queries: Optional[Dict] = None) -> Dict:
        """Run the network on a normalised padded batch.

        Args:
            images: (B, 3, H, W) normalised, zero-padded; mask: (B, H, W) True on padding.
            dn_queries: denoising queries (training): ``content`` (B, Nd, D), ``boxes_unsig`` (B, Nd, 4),
                ``attn_mask`` (Nd + Nq, Nd + Nq) bool (True = blocked) and ``dn_meta`` (``pad_size``,
                ``num_dn_group``).
        Returns:
            the official output dict (contract in docs/ARCHITECTURE.md); with DN queries the DN part is in
            ``dn_meta['output_known_lbs_bboxes']``. Also ``topk_index`` (B, Nq) selected encoder tokens,
            ``anchors_unsig`` (B, Nd + Nq, 4) decoder input boxes and ``roi_levels`` (B, Nd + Nq) RoI pooler
            levels, for inspection and parity checks.
        """
        srcs, masks, pos = self._multiscale_features(images, mask)
        dn_content = dn_boxes = instance_mask = None
        if dn_queries is not None:
            dn_content, dn_boxes = dn_queries["content"], dn_queries["boxes_unsig"]
            instance_mask = dn_queries["attn_mask"]
        result = self.transformer(srcs, masks, pos, dn_content, dn_boxes, instance_mask)
        keys = ("pred_logits", "pred_boxes", "pred_beziers", "pred_rec")
        layers = [{k: layer[k] for k in keys} for layer in result["layers"]]
        if self.training:
            # keeps the label embedding in the graph when no DN query uses it (DDP needs every parameter)
            layers[-1]["pred_logits"] = layers[-1]["pred_logits"] + self.label_enc.weight[0, 0] * 0.0
        out = {"interm_outputs": result["interm_outputs"], "topk_index": result["topk_index"],
               "anchors_unsig": result["anchors_unsig"], "roi_levels": result["roi_levels"]}
        if dn_queries is not None:
            layers, out["dn_meta"] = split_denoising_outputs(layers, dn_queries["dn_meta"])
        out.update(layers[-1])
        out["aux_outputs"] = layers[:-1]
        return out

    def official_targets(self, instances_list, image_sizes) -> List[Dict[str, torch.Tensor]]:
        """detectron2 ``Instances`` (absolute pixels of the transformed image) -> official target dicts.

        ``labels = gt_classes + 1`` (the official head trains class 1 for text), ``boxes`` cxcywh and
        ``bezier_pts`` normalised by the unpadded image size, ``rec`` the class ids.
        """
        targets = []
        for instances, (height, width) in zip(instances_list, image_sizes):
            for field in ("gt_boxes", "gt_classes", "gt_beziers", "gt_rec"):
                if not instances.has(field):
                    raise ValueError(f"training instances lack the field '{field}' (see the mapper contract in "
                                     "docs/ARCHITECTURE.md)")
            instances = instances.to(self.device)
            scale = torch.tensor([width, height, width, height], dtype=torch.float32, device=self.device)
            x0, y0, x1, y1 = instances.gt_boxes.tensor.float().unbind(-1)
            boxes = torch.stack([(x0 + x1) / 2, (y0 + y1) / 2, x1 - x0, y1 - y0], dim=-1) / scale
            targets.append({
                "labels": instances.gt_classes.long() + 1,
                "boxes": boxes,
                "bezier_pts": instances.gt_beziers.float() / scale[:2].repeat(8),
                "rec": instances.gt_rec.long(),
            })
        return targets

    def forward(self, batched_inputs: List[Dict]):
        """
        Args:
            batched_inputs: detectron2 dicts with a uint8 ``image`` (3, H, W) in INPUT.FORMAT, ``instances``
                (training) and optional ``height``/``width`` (the original size to report results in).
        Returns:
            training: dict of weighted loss terms (their sum is the official total loss);
            inference: one ``{"instances": Instances}`` per image (fields in docs/ARCHITECTURE.md).
        """
        images = [self.normalize(x["image"]) for x in batched_inputs]
        image_list, mask = self.batch_images(images)
        if not self.training:
            outputs = self.network(image_list.tensor, mask)
            return self.inference(outputs, batched_inputs, image_list.image_sizes)
        if self.criterion is None:
            raise RuntimeError("ESTS was built without a criterion and cannot be trained")
        if any("instances" not in x for x in batched_inputs):
            raise ValueError("training inputs need 'instances' (gt_boxes, gt_classes, gt_beziers, gt_rec)")
        targets = self.official_targets([x["instances"] for x in batched_inputs], image_list.image_sizes)
        dn_queries = self.denoising(targets, self.label_enc) if self.denoising is not None else None
        outputs = self.network(image_list.tensor, mask, dn_queries)
        terms = self.criterion(outputs, targets)
        weighted = self.criterion.weighted_losses(terms)
        _log_unweighted_terms({k: v for k, v in terms.items() if k not in weighted})
        return weighted

    def inference(self, outputs: Dict, batched_inputs: List[Dict], image_sizes) -> List[Dict[str, Instances]]:
        """Top-``NUM_SELECT`` detections per image in original-image coordinates (no score threshold).

        Predictions are normalised by the unpadded input size, so scaling them by the original
        (``height``, ``width``) undoes the test-time resize.
        """
        if self.postprocess is None:
            raise RuntimeError("ESTS was built without a post-processor and cannot run inference")
        original_sizes = [(x.get("height", h), x.get("width", w)) for x, (h, w) in zip(batched_inputs, image_sizes)]
        results = self.postprocess(outputs, torch.tensor(original_sizes, device=self.device))
        return [{"instances": result_to_instances(r, size, self.vocabulary)}
                for r, size in zip(results, original_sizes)]

    def official_forward(self, images: List[torch.Tensor], dn_queries: Optional[Dict] = None) -> Dict:
        """``network`` on a list of normalised (3, h_i, w_i) images (the official ``model(samples)``)."""
        image_list, mask = self.batch_images([img.to(self.device) for img in images])
        return self.network(image_list.tensor, mask, dn_queries)
