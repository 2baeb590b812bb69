"""ESTS decoder: task-aware queries (1 detection + T recognition slots per instance) refined by 6 layers.

Each layer: vision-language communication (VLC) over the slots, intra-instance attention over the
slots, inter-instance attention over the instances (one batched call for all slots), deformable
cross-attention into the encoder memory with the instance's reference box, FFN. The shared heads
(class, box, polygon, recognition) live here because the box head and the recognition classifier
also drive the layer-to-layer updates.

Layout: the decoder state is batch-first (B, N, K, D), K = 1 + T slots.
"""
from typing import Dict, List, Optional

import torch
from torch import nn

from .layers import MLP, inverse_sigmoid, multihead_attention
from .ms_deform_attn import MSDeformAttn
from .recompute import MemoryPolicy, Recipe, feed_forward, residual_norm, run_layer, shared_autocast_input, then
from .position_encoding import box_sine_embedding, text_position_table


class ESTSDecoderLayer(nn.Module):
    """One decoder layer with the official parameter names."""

    def __init__(self, d_model: int, d_ffn: int, n_levels: int, n_heads: int, n_points: int,
                 dropout: float = 0.0, sample_in_fp32: bool = True, policy: MemoryPolicy = MemoryPolicy()):
        super().__init__()
        self.policy = policy
        self.cross_attn = MSDeformAttn(d_model, n_levels, n_heads, n_points, sample_in_fp32, policy)
        self.dropout1 = nn.Dropout(dropout)
        self.norm1 = nn.LayerNorm(d_model)
        self.attn_inter = nn.MultiheadAttention(d_model, n_heads, dropout=dropout)
        self.dropout_inter = nn.Dropout(dropout)
        self.norm_inter = nn.LayerNorm(d_model)
        self.attn_intra = nn.MultiheadAttention(d_model, n_heads, dropout=dropout)
        self.dropout_intra = nn.Dropout(dropout)
        self.norm_intra = nn.LayerNorm(d_model)
        self.attn_m = nn.MultiheadAttention(d_model, n_heads, dropout=dropout)
        self.dropout_m = nn.Dropout(dropout)
        self.norm_m = nn.LayerNorm(d_model)
        self.linear1 = nn.Linear(d_model, d_ffn)
        self.dropout3 = nn.Dropout(dropout)
        self.linear2 = nn.Linear(d_ffn, d_model)
        self.dropout4 = nn.Dropout(dropout)
        self.norm3 = nn.LayerNorm(d_model)
        self.linear1_m = nn.Linear(d_model, d_ffn)
        self.dropout3_m = nn.Dropout(dropout)
        self.linear2_m = nn.Linear(d_ffn, d_model)
        self.dropout4_m = nn.Dropout(dropout)
        self.norm3_m = nn.LayerNorm(d_model)

    def forward(self, x, language, text_pos, query_pos, box_reference, memory, spatial_shapes, padding_mask,
                instance_mask: Optional[torch.Tensor] = None, x_recipe: Optional[Recipe] = None):
        """
        Args:
            x: (B, N, K, D) slot states.
            language: (B, N, K, D) VLC values: detection slot content, then the projected recognition
                probabilities of the previous layer.
            text_pos: (K, D) slot position table.
            query_pos: (B, N, D) positional query of each instance (from its reference box).
            box_reference: (B, N, L, 4) reference box per level (valid-ratio scaled).
            memory: (B, S, D); spatial_shapes: L pairs; padding_mask: (B, S).
            instance_mask: (N, N) bool, True = blocked (denoising groups), or None.
            x_recipe: the recipe of x (the previous layer's output recipe), or None.
        Returns:
            the (B, N, K, D) output and its recipe (from what the norms keep; None when recipes are off).
        """
        num_slots = x.shape[2]
        policy = self.policy
        # Under autocast the stream is float32 and the updates half precision: every norm keeps its update and
        # redoes its input sum from the previous norm's recipe, back through the earlier layers to the first
        # layer's first norm, whose input is kept. In float32 every norm keeps its input sum.
        # 1. VLC: each slot reads the other slots' language (never its own position)
        diagonal = torch.full((num_slots, num_slots), 0.0, dtype=x.dtype, device=x.device)
        diagonal.fill_diagonal_(float("-inf"))
        attn = multihead_attention(self.attn_m, x + text_pos, language + text_pos, language, attn_mask=diagonal,
                                   policy=policy)
        x, x_recipe = residual_norm(self.norm_m, x, self.dropout_m(attn), x_recipe, policy)
        ffn = feed_forward(x, self.linear1_m, self.dropout3_m, self.linear2_m, policy, x_recipe)
        x, x_recipe = residual_norm(self.norm3_m, x, self.dropout4_m(ffn), x_recipe, policy)
        # 2. intra-instance self-attention over the K slots
        qk = x + text_pos
        attn = multihead_attention(self.attn_intra, qk, qk, x, same_qk=True, policy=policy)
        x, x_recipe = residual_norm(self.norm_intra, x, self.dropout_intra(attn), x_recipe, policy)
        # 3. inter-instance self-attention over the N instances, every slot index independently: one call
        #    with (B, K) as batch dimensions; (B, N, K, D) <-> (B, K, N, D), the recipes swapped like the tensors
        x_inter, x_recipe = x.transpose(1, 2), then(x_recipe, torch.transpose, 1, 2)
        qk = x_inter + query_pos[:, None]
        attn = multihead_attention(self.attn_inter, qk, qk, x_inter, attn_mask=instance_mask, same_qk=True,
                                   policy=policy)
        x, x_recipe = residual_norm(self.norm_inter, x_inter, self.dropout_inter(attn), x_recipe, policy)
        x, x_recipe = x.transpose(1, 2), then(x_recipe, torch.transpose, 1, 2)
        # 4. deformable cross-attention, every slot sampling around its instance's box
        batch, num_inst, _, dim = x.shape
        query = (x + query_pos[:, :, None]).reshape(batch, num_inst * num_slots, dim)
        reference = box_reference[:, :, None].expand(-1, -1, num_slots, -1, -1).flatten(1, 2)
        attn = self.cross_attn(query, reference, memory, spatial_shapes, padding_mask)
        x, x_recipe = residual_norm(self.norm1, x, self.dropout1(attn.view(batch, num_inst, num_slots, dim)), x_recipe,
                                    policy)
        # 5. FFN
        ffn = feed_forward(x, self.linear1, self.dropout3, self.linear2, policy, x_recipe)
        return residual_norm(self.norm3, x, self.dropout4(ffn), x_recipe, policy)


class ESTSDecoder(nn.Module):
    """Stack of decoder layers plus the heads shared by all layers.

    Args:
        num_layers, d_model, d_ffn, n_levels, n_heads, n_points, dropout: transformer sizes.
        num_classes: box classes C; voc_size: recognition classes V; max_text_len: recognition slots T.
        sample_in_fp32: keep deformable sampling in float32 under autocast.
        policy: what backward recomputes instead of autograd keeping it (``recompute.MemoryPolicy``).
    """

    def __init__(self, *, num_layers: int, d_model: int, d_ffn: int, n_levels: int, n_heads: int,
                 n_points: int, dropout: float, num_classes: int, voc_size: int, max_text_len: int,
                 sample_in_fp32: bool = True, policy: MemoryPolicy = MemoryPolicy()):
        super().__init__()
        self.policy = policy
        self.layers = nn.ModuleList(
            ESTSDecoderLayer(d_model, d_ffn, n_levels, n_heads, n_points, dropout, sample_in_fp32, policy)
            for _ in range(num_layers)
        )
        self.norm = nn.LayerNorm(d_model)
        self.ref_point_head = MLP(2 * d_model, d_model, d_model, 2)
        self.class_embed = nn.Linear(d_model, num_classes)
        self.bbox_embed = MLP(d_model, d_model, 4, 3)
        self.polygon_embed = MLP(d_model, d_model, 32, 3)
        self.rec_cls = nn.Linear(d_model, voc_size)
        self.rec_proj = nn.Linear(voc_size, d_model)
        # fixed table, recomputed rather than stored (the official buffer is deterministic)
        self.register_buffer("text_pos", text_position_table(1 + max_text_len, d_model), persistent=False)

    def forward(self, content, roi_features, anchors_unsig, memory, spatial_shapes, valid_ratios, padding_mask,
                instance_mask=None) -> List[Dict[str, torch.Tensor]]:
        """
        Args:
            content: (B, N, D) detection-slot content; roi_features: (B, N, T, D) recognition-slot init.
            anchors_unsig: (B, N, 4) reference boxes in logit space (no gradient).
            memory: (B, S, D); spatial_shapes: L pairs; valid_ratios: (B, L, 2); padding_mask: (B, S).
            instance_mask: (N, N) bool, True = blocked, or None.
        Returns:
            one dict per layer with ``pred_logits`` (B,N,C), ``pred_boxes`` (B,N,4), ``pred_beziers``
            (B,N,32), ``pred_rec`` (B,N,T,V) and ``reference`` (B,N,4) (the refined box, sigmoid).
        """
        x = torch.cat((content[:, :, None], roi_features), dim=2)
        reference = anchors_unsig.sigmoid()
        head_reference = reference  # "look forward twice": heads of layer l use layer l-1's box with grad
        rec_logits = self.rec_cls(x[:, :, 1:])
        ratio_scale = torch.cat((valid_ratios, valid_ratios), -1)[:, None]  # (B, 1, L, 4)
        text_pos = self.text_pos.to(x.dtype)
        # the layers read the memory only through their value projections: under CUDA autocast (a float32
        # memory) one half-precision copy for all of them, where each would keep its own
        memory_values = shared_autocast_input(memory)
        outputs = []
        x_recipe = None  # the decoder's input has no recipe: only layer outputs do
        for layer in self.layers:
            language = torch.cat((x[:, :, :1], self.rec_proj(rec_logits.softmax(-1))), dim=2)
            box_reference = reference[:, :, None] * ratio_scale  # (B, N, L, 4)
            query_pos = self.ref_point_head(box_sine_embedding(box_reference[:, :, 0]))
            x, x_recipe = run_layer(self.policy, layer, x, language, text_pos, query_pos, box_reference,
                                    memory_values(), spatial_shapes, padding_mask, instance_mask, input_recipe=x_recipe)
            # the next reference and the recognition logits read the un-normalised state
            new_reference = (self.bbox_embed(x[:, :, 0]) + inverse_sigmoid(reference)).sigmoid()
            rec_logits = self.rec_cls(x[:, :, 1:])
            # a copy of the detection slot: the norm keeps its input for backward, and a view would keep the
            # whole (B, N, K, D) layer output alive (under autocast nothing else holds it: linears keep casts)
            detection = self.norm(x[:, :, 0].contiguous())
            ref_logit = inverse_sigmoid(head_reference)
            outputs.append({
                "pred_logits": self.class_embed(detection),
                "pred_boxes": (self.bbox_embed(detection) + ref_logit).sigmoid(),
                "pred_beziers": (self.polygon_embed(detection) + ref_logit[..., :2].repeat(1, 1, 16)).sigmoid(),
                "pred_rec": rec_logits,
                "reference": new_reference,
            })
            head_reference = new_reference
            reference = new_reference.detach()
        return outputs
