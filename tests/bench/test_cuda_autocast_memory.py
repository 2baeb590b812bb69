"""Under CUDA autocast's float32 rules (emulated on the CPU), the model holds no float32 copy it does not need."""
import gc
import weakref

import torch
from detectron2.modeling import build_model

import ests_d2.modeling  # noqa: F401  (registers the meta-architecture)
from bench.cuda_autocast_rules import CudaAutocastFloat32Rules
from tests.modeling.model_config import tiny_ests_cfg
from tests.modeling.test_meta_arch import _training_input


def test_float32_encoder_input_and_proposal_features_are_gone_when_the_decoder_starts():
    # with CUDA's rules the input projection's GroupNorm and the proposal LayerNorm give float32 tensors that
    # only half-precision copies are kept of: the transformer must not hold them through the decoder, where
    # the step's memory peaks
    torch.manual_seed(0)
    model = build_model(tiny_ests_cfg()).train()
    transformer = model.transformer
    made, alive_in_decoder = {}, []

    def remember(name, tensor):
        made[name] = (tensor.dtype, weakref.ref(tensor.untyped_storage()))

    transformer.encoder.register_forward_pre_hook(lambda _, args: remember("encoder input", args[0]))
    transformer.enc_output_norm.register_forward_hook(lambda _, args, out: remember("proposal features", out))

    def note_alive(*_):
        gc.collect()
        alive_in_decoder.extend(name for name, (_, ref) in made.items() if ref() is not None)

    transformer.decoder.layers[0].register_forward_pre_hook(note_alive)
    with torch.autocast("cpu", dtype=torch.bfloat16), CudaAutocastFloat32Rules():
        losses = model([_training_input(64, 96, ["TOAST"], 6)])
        sum(losses.values()).backward()
    assert {name: dtype for name, (dtype, _) in made.items()} == {"encoder input": torch.float32,
                                                                   "proposal features": torch.float32}
    assert alive_in_decoder == []
