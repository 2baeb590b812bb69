"""Sine position encodings of ESTS: 2-D maps for the encoder, boxes for decoder queries, 1-D slot table."""
import math

import torch
from torch import nn


class PositionEmbeddingSine2D(nn.Module):
    """2-D sine encoding of a padded feature map, normalised by the *valid* (unpadded) extent.

    Channels are ``num_pos_feats`` for y followed by ``num_pos_feats`` for x, each interleaving sin (even
    channels) and cos (odd channels) as the official ``PositionEmbeddingSineHW``.
    """

    def __init__(self, num_pos_feats: int = 128, temperature: float = 20.0, scale: float = 2 * math.pi):
        super().__init__()
        self.num_pos_feats = num_pos_feats
        self.temperature = temperature
        self.scale = scale

    def forward(self, mask: torch.Tensor) -> torch.Tensor:
        """
        Args:
            mask: (B, H, W) bool, True on padding.
        Returns:
            (B, 2 * num_pos_feats, H, W) float32.
        """
        not_mask = ~mask
        y_embed = not_mask.cumsum(1, dtype=torch.float32)
        x_embed = not_mask.cumsum(2, dtype=torch.float32)
        eps = 1e-6  # official epsilon; the last row/column of a fully padded map would divide by 0
        y_embed = y_embed / (y_embed[:, -1:, :] + eps) * self.scale
        x_embed = x_embed / (x_embed[:, :, -1:] + eps) * self.scale
        dim_t = torch.arange(self.num_pos_feats, dtype=torch.float32, device=mask.device)
        dim_t = self.temperature ** (2 * torch.div(dim_t, 2, rounding_mode="floor") / self.num_pos_feats)
        pos_x = _interleave_sin_cos(x_embed[..., None] / dim_t)
        pos_y = _interleave_sin_cos(y_embed[..., None] / dim_t)
        return torch.cat((pos_y, pos_x), dim=3).permute(0, 3, 1, 2)


def _interleave_sin_cos(angles: torch.Tensor) -> torch.Tensor:
    """sin of the even channels and cos of the odd channels, interleaved back in channel order."""
    return torch.stack((angles[..., 0::2].sin(), angles[..., 1::2].cos()), dim=-1).flatten(-2)


def box_sine_embedding(boxes: torch.Tensor, num_pos_feats: int = 128, temperature: float = 10000.0) -> torch.Tensor:
    """Sine embedding of (cx, cy, w, h) boxes for the decoder query position.

    Args:
        boxes: (..., 4) normalised boxes.
    Returns:
        (..., 4 * num_pos_feats) in the official channel order (y, x, w, h).
    """
    scale = 2 * math.pi
    dim_t = torch.arange(num_pos_feats, dtype=torch.float32, device=boxes.device)
    dim_t = temperature ** (2 * torch.div(dim_t, 2, rounding_mode="floor") / num_pos_feats)
    embeds = [_interleave_sin_cos((boxes[..., i] * scale)[..., None] / dim_t) for i in range(4)]
    pos_x, pos_y, pos_w, pos_h = embeds
    return torch.cat((pos_y, pos_x, pos_w, pos_h), dim=-1)


def text_position_table(num_slots: int, dim: int, temperature: float = 10000.0) -> torch.Tensor:
    """1-D position table of the K = 1 + T slots of an instance (sin block then cos block).

    Slot k sits at p = (k + 1) / (K + 1e-6) (normalised with scale 1, as the official
    ``PositionalEncoding1D(normalize=True, scale=1)``).

    Returns:
        (num_slots, dim) float32.
    """
    inv_freq = 1.0 / (temperature ** (torch.arange(0, dim, 2).float() / dim))
    pos = torch.arange(1, num_slots + 1, dtype=torch.float32)
    pos = pos / (pos[-1:] + 1e-6)
    angles = torch.einsum("i,j->ij", pos, inv_freq)
    return torch.cat((angles.sin(), angles.cos()), dim=-1)
