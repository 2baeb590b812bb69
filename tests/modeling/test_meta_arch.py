"""End-to-end behaviour of the ESTS meta-architecture on a tiny configuration (training and inference)."""
import math

import pytest
import torch
from detectron2.modeling import build_model

import ests_d2.modeling  # noqa: F401  (registers the meta-architecture)
from ests_d2.structures import CharVocabulary
from ests_d2.structures.text_instances import straight_text_instances

from tests.modeling.model_config import tiny_ests_cfg


def _training_input(height, width, words, seed):
    gen = torch.Generator().manual_seed(seed)
    vocab = CharVocabulary.from_config(97)
    boxes = []
    for i, _ in enumerate(words):
        x0, y0 = 10.0 + 40 * i, 12.0 + 30 * i
        boxes.append([x0, y0, min(x0 + 60, width - 1), min(y0 + 20, height - 1)])
    rec = torch.tensor([vocab.encode(w, 25) for w in words], dtype=torch.int64).reshape(-1, 25)
    instances = straight_text_instances((height, width), boxes, rec)
    image = torch.randint(0, 256, (3, height, width), dtype=torch.uint8, generator=gen)
    return {"image": image, "height": height, "width": width, "image_id": seed, "instances": instances}


@pytest.fixture(scope="module")
def tiny_model():
    torch.manual_seed(0)
    return build_model(tiny_ests_cfg())


def test_training_forward_gives_finite_weighted_losses_and_gradients(tiny_model):
    model = tiny_model.train()
    batch = [_training_input(96, 128, ["TOAST", "BOX"], 1), _training_input(112, 80, ["crocs"], 2)]
    torch.manual_seed(1)
    losses = model(batch)
    # 2 decoder layers x (5 matching + 5 DN) terms + 3 encoder-proposal terms
    assert len(losses) == 2 * 10 + 3
    assert all(v.dim() == 0 and math.isfinite(float(v.detach())) for v in losses.values())
    # only weighted terms reach detectron2's sum (logged-only terms such as class_error stay out)
    assert set(losses) <= set(model.criterion.weight_dict)
    assert "class_error" not in losses and "loss_rec_dn" in losses and "loss_ce_interm" in losses
    total = sum(losses.values())
    total.backward()
    assert model.input_proj[0][0].weight.grad is not None
    assert model.transformer.decoder.rec_cls.weight.grad.abs().sum() > 0
    assert model.label_enc.weight.grad is not None
    # stem and res2 stay frozen (FREEZE_AT = 2), res3 trains
    assert model.backbone.stem.conv1.weight.grad is None
    assert model.backbone.res3[0].conv1.weight.grad is not None
    model.zero_grad(set_to_none=True)


def test_training_with_images_without_text(tiny_model):
    model = tiny_model.train()
    empty = _training_input(64, 96, [], 3)
    losses = model([empty, _training_input(96, 64, ["a"], 4)])
    assert all(math.isfinite(float(v.detach())) for v in losses.values())
    losses = model([empty])  # no GT at all: no DN queries, the DN terms are the official zero placeholders
    assert all(math.isfinite(float(v.detach())) for v in losses.values())
    assert float(losses["loss_bbox"].detach()) == 0.0


@pytest.mark.parametrize("memory_key", ["ACTIVATION_CHECKPOINT", "FFN_RECOMPUTE"])
def test_recomputation_gives_the_same_losses_and_gradients(memory_key):
    cfg = tiny_ests_cfg()
    cfg.MODEL.ESTS.DN.ENABLED = False
    cfg.MODEL.ESTS.ACTIVATION_CHECKPOINT = cfg.MODEL.ESTS.FFN_RECOMPUTE = False
    torch.manual_seed(0)
    plain = build_model(cfg).train()
    cfg.MODEL.ESTS[memory_key] = True
    recomputing = build_model(cfg).train()
    recomputing.load_state_dict(plain.state_dict())
    batch = [_training_input(64, 96, ["TOAST"], 5)]
    grads = []
    for model in (plain, recomputing):
        losses = model(batch)
        sum(losses.values()).backward()
        grads.append((losses, {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}))
    (l0, g0), (l1, g1) = grads
    assert all(torch.allclose(l0[k], l1[k], atol=1e-6) for k in l0)
    assert g0.keys() == g1.keys() and "transformer.decoder.layers.0.linear2_m.weight" in g0
    assert all(torch.allclose(g0[k], g1[k], atol=1e-6) for k in g0)


def test_inference_returns_instances_in_original_coordinates(tiny_model):
    model = tiny_model.eval()
    inputs = [{"image": torch.randint(0, 256, (3, 96, 128), dtype=torch.uint8), "height": 192, "width": 256},
              {"image": torch.randint(0, 256, (3, 112, 80), dtype=torch.uint8)}]
    with torch.no_grad():
        results = model(inputs)
    assert len(results) == 2
    first, second = results[0]["instances"], results[1]["instances"]
    assert first.image_size == (192, 256) and second.image_size == (112, 80)
    num_select = model.postprocess.num_select
    assert len(first) == num_select
    assert first.polygons.shape == (num_select, 32) and first.rec.shape == (num_select, 25)
    assert first.rec_probs.shape == (num_select, 25, 97)
    assert len(first.texts) == num_select
    assert (first.scores[:-1] >= first.scores[1:]).all()
    # boxes are scaled to the original size: the predicted boxes are inside [0, 1] x size
    assert float(first.pred_boxes.tensor[:, 2].max()) <= 256 + 1e-3
    assert float(first.pred_boxes.tensor[:, 0].min()) >= -256


@pytest.mark.parametrize("checkpointed", [False, True])
def test_one_memory_policy_reaches_every_layer_and_checkpointed_layers_keep_no_recipes(checkpointed):
    # saved-tensor hooks do not nest: recipes inside a checkpointed layer would override the checkpoint's
    # hooks and keep what the checkpoint drops
    from ests_d2.modeling.decoder import ESTSDecoderLayer
    from ests_d2.modeling.encoder import DeformableEncoderLayer
    from ests_d2.modeling.ms_deform_attn import MSDeformAttn

    cfg = tiny_ests_cfg()
    cfg.MODEL.ESTS.ACTIVATION_CHECKPOINT = checkpointed
    model = build_model(cfg)
    policy = model.transformer.policy
    assert policy.recompute_sampling and policy.checkpoint_layers == checkpointed and policy.recipes != checkpointed
    layers = [m for m in model.modules() if isinstance(m, (MSDeformAttn, DeformableEncoderLayer, ESTSDecoderLayer))]
    assert len(layers) == 2 * (cfg.MODEL.ESTS.ENC_LAYERS + cfg.MODEL.ESTS.DEC_LAYERS)
    assert all(m.policy is policy for m in layers)


def _float32_memory_step(model, monkeypatch, share: bool):
    """One autocast step whose encoder hands the decoder a float32 memory, as on CUDA (its autocast runs
    LayerNorm in float32); the inputs of the decoder layers' value projections, the losses and the gradients."""
    from ests_d2.modeling import decoder

    if not share:  # every layer's value projection casts the memory itself (autocast's way)
        monkeypatch.setattr(decoder, "shared_autocast_input", lambda memory: lambda: memory)
    monkeypatch.setattr(model.transformer.encoder, "forward",
                        lambda *args, **kwargs: type(model.transformer.encoder).forward(
                            model.transformer.encoder, *args, **kwargs).float())
    value_rows = []
    hooks = [layer.cross_attn.value_proj.register_forward_pre_hook(lambda _, args: value_rows.append(args[0]))
             for layer in model.transformer.decoder.layers]
    model.zero_grad(set_to_none=True)
    torch.manual_seed(3)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        losses = model([_training_input(64, 96, ["TOAST"], 6)])
    for hook in hooks:  # the forward's projections only (backward projects the values again)
        hook.remove()
    sum(losses.values()).float().backward()
    monkeypatch.undo()
    grads = {name: p.grad for name, p in model.named_parameters() if p.grad is not None}
    return value_rows, {k: v.detach() for k, v in losses.items()}, grads


def test_decoder_layers_share_one_copy_of_a_float32_memory_with_autocast_gradients(monkeypatch):
    # each layer's value projection would keep its own bf16 copy of the memory; one copy serves all, and the
    # gradients still add up in float32 (one conversion per layer): bit for bit autocast's own casts
    torch.manual_seed(0)
    model = build_model(tiny_ests_cfg()).train()
    shared_rows, shared_losses, shared_grads = _float32_memory_step(model, monkeypatch, share=True)
    own_rows, own_losses, own_grads = _float32_memory_step(model, monkeypatch, share=False)
    assert len(shared_rows) == len(own_rows) == len(model.transformer.decoder.layers) == 2
    assert all(rows.dtype == torch.bfloat16 for rows in shared_rows + own_rows)
    storages = {rows.untyped_storage().data_ptr() for rows in shared_rows}
    assert len(storages) == 1 and len({rows.untyped_storage().data_ptr() for rows in own_rows}) == 2
    assert shared_losses.keys() == own_losses.keys()
    assert all(torch.equal(shared_losses[k], own_losses[k]) for k in shared_losses)
    assert shared_grads.keys() == own_grads.keys() and "backbone.res3.0.conv1.weight" in shared_grads
    assert all(torch.equal(shared_grads[k], own_grads[k]) for k in shared_grads)
