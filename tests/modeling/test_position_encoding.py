"""Position encodings: 2-D sine maps (temperature 20, valid-extent normalisation), box and slot embeddings."""
import math

import torch

from ests_d2.modeling.official_checkpoint import official_text_pos_inv_freq
from ests_d2.modeling.position_encoding import PositionEmbeddingSine2D, box_sine_embedding, text_position_table
from tests.shared_paths import load_golden


def test_2d_encoding_is_normalised_by_the_valid_extent():
    mask = torch.zeros(1, 4, 6, dtype=torch.bool)
    mask[:, :, 4:] = True  # 2 padded columns
    mask[:, 3:, :] = True  # 1 padded row
    pos = PositionEmbeddingSine2D(num_pos_feats=8, temperature=20)(mask)
    assert pos.shape == (1, 16, 4, 6)
    # channel 8 = sin(x * 2pi / 20^0) of the x half; the last *valid* column sits at x = 2pi (up to eps)
    x_sin = pos[0, 8, 0]
    assert torch.allclose(x_sin[:4], torch.sin(torch.tensor([1, 2, 3, 4]) / 4 * 2 * math.pi), atol=1e-5)
    # padding columns repeat the last valid cumulative count
    assert torch.allclose(x_sin[4:], x_sin[3].expand(2))
    # channel 9 = cos of the same frequency (interleaved sin/cos), channel 2 uses temperature 20^(2/8)
    assert torch.allclose(pos[0, 9, 0, :4], torch.cos(torch.tensor([1, 2, 3, 4]) / 4 * 2 * math.pi), atol=1e-5)
    y = torch.tensor([1, 2, 3]) / 3 * 2 * math.pi
    assert torch.allclose(pos[0, 2, :3, 0], torch.sin(y / 20 ** (2 / 8)), atol=1e-5)


def test_2d_encoding_matches_golden_levels():
    inputs, inter = load_golden("inputs.pth"), load_golden("intermediates.pth")
    encoder = PositionEmbeddingSine2D(128, temperature=20)
    mask = inputs["batch_mask"][None].float()
    for level in range(5):
        ref = inter[f"pos.{level}.sel"]
        level_mask = torch.nn.functional.interpolate(mask, size=ref.shape[-2:]).bool()[0]
        pos = encoder(level_mask)[:, inter[f"pos.{level}.channels"]]
        assert torch.allclose(pos, ref, atol=1e-5), level


def test_box_embedding_order_is_y_x_w_h():
    box = torch.tensor([[0.1, 0.2, 0.3, 0.4]])
    emb = box_sine_embedding(box)
    assert emb.shape == (1, 512)
    two_pi = 2 * math.pi
    for block, value in enumerate((0.2, 0.1, 0.3, 0.4)):
        assert torch.allclose(emb[0, block * 128], torch.tensor(math.sin(value * two_pi)), atol=1e-6)
        assert torch.allclose(emb[0, block * 128 + 1], torch.tensor(math.cos(value * two_pi)), atol=1e-6)
    assert torch.allclose(emb[0, 2], torch.tensor(math.sin(0.2 * two_pi / 10000 ** (2 / 128))), atol=1e-6)


def test_text_position_table():
    table = text_position_table(26, 256)
    assert table.shape == (26, 256)
    inv_freq = official_text_pos_inv_freq(256)
    p = torch.arange(1, 27, dtype=torch.float32) / (26 + 1e-6)
    assert torch.allclose(table[:, :128], torch.sin(p[:, None] * inv_freq), atol=1e-6)
    assert torch.allclose(table[:, 128:], torch.cos(p[:, None] * inv_freq), atol=1e-6)


def test_inv_freq_matches_the_official_buffer():
    import json

    from tests.shared_paths import require_golden_file

    entries = json.loads(require_golden_file("weights_checksums.json").read_text())["entries"]
    values = next(e["values"] for e in entries if e["name"].endswith("text_pos_embed.inv_freq"))
    assert torch.equal(official_text_pos_inv_freq(256), torch.tensor(values, dtype=torch.float32))
