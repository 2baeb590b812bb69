"""Eval-mode parity with the official code (golden/README.md): final, aux and interm outputs, stage by stage
intermediates, and post-processing. One forward of the golden batch is shared by all tests of the module."""
import pytest
import torch

from tests.modeling.golden_model import assert_close, golden_model
from tests.shared_paths import load_golden

FINAL_ATOL = 1e-4  # the bar for final / aux / interm outputs


def _capture(model):
    """Forward hooks recording the intermediates the golden data stores; returns (records, handles)."""
    rec = {"input_proj": [], "pos": [], "norm": [], "rec_cls": [], "ref_point_head": [], "class_logits": []}
    hooks = []

    def keep(name, transform=lambda x: x):
        def hook(module, args, output):
            rec[name].append(transform(output))
        return hook

    hooks.append(model.backbone.register_forward_hook(lambda m, a, o: rec.__setitem__("backbone", o)))
    for proj in model.input_proj:
        hooks.append(proj.register_forward_hook(keep("input_proj")))
    hooks.append(model.position_encoding.register_forward_hook(keep("pos")))
    transformer = model.transformer
    hooks.append(transformer.encoder.register_forward_hook(lambda m, a, o: rec.update(memory=o, memory_mask=a[4])))
    hooks.append(transformer.enc_out_class_embed.register_forward_hook(keep("class_logits")))
    hooks.append(transformer.decoder.register_forward_pre_hook(lambda m, a: rec.__setitem__("roi_features", a[1])))
    hooks.append(transformer.decoder.register_forward_hook(lambda m, a, o: rec.__setitem__("decoder", o)))
    hooks.append(transformer.decoder.norm.register_forward_hook(keep("norm")))
    hooks.append(transformer.decoder.rec_cls.register_forward_hook(keep("rec_cls")))
    hooks.append(transformer.decoder.ref_point_head.register_forward_hook(keep("ref_point_head")))
    layer0 = transformer.decoder.layers[0]
    for step, norm in [("1_vlc_attn", layer0.norm_m), ("2_vlc_ffn", layer0.norm3_m), ("3_intra_sa", layer0.norm_intra),
                       ("4_inter_sa", layer0.norm_inter), ("5_cross_attn", layer0.norm1), ("6_ffn", layer0.norm3)]:
        # the inter-instance step runs with the slot axis before the instance axis
        fix = (lambda o: o.transpose(1, 2)) if step == "4_inter_sa" else (lambda o: o)
        hooks.append(norm.register_forward_hook(lambda m, a, o, step=step, fix=fix: rec.__setitem__(step, fix(o))))
    return rec, hooks


@pytest.fixture(scope="module")
def golden_run():
    inputs = load_golden("inputs.pth")
    model, report = golden_model()
    model.eval()
    records, hooks = _capture(model)
    with torch.no_grad():
        outputs = model.official_forward(inputs["images"])
    for h in hooks:
        h.remove()
    return {"model": model, "report": report, "inputs": inputs, "outputs": outputs, "records": records}


def test_recipe_weights_go_through_the_converter(golden_run):
    report = golden_run["report"]
    assert report.num_converted == 660
    assert len(report.aliases_merged) == 122
    assert report.dropped_buffers == ["transformer.decoder.text_pos_embed.inv_freq"]
    assert report.unmapped == []


def test_batching_reproduces_the_golden_mask(golden_run):
    model, inputs = golden_run["model"], golden_run["inputs"]
    image_list, mask = model.batch_images(inputs["images"])
    assert torch.equal(mask, inputs["batch_mask"])
    assert [list(s) for s in image_list.image_sizes] == inputs["image_sizes_hw"].tolist()


def test_normalisation_is_bit_exact(golden_run):
    model, inputs = golden_run["model"], golden_run["inputs"]
    assert len(inputs["images"]) > 0
    for u8, ref in zip(inputs["images_uint8"], inputs["images"], strict=True):
        assert torch.equal(model.normalize(u8), ref)


def test_final_aux_and_interm_outputs(golden_run):
    out, ref = golden_run["outputs"], load_golden("outputs.pth")
    for key in ("pred_logits", "pred_boxes", "pred_beziers", "pred_rec"):
        assert_close(out[key], ref[key], key, atol=FINAL_ATOL)
        for layer, aux in enumerate(ref["aux_outputs"]):
            assert_close(out["aux_outputs"][layer][key], aux[key], f"aux {layer} {key}", atol=FINAL_ATOL)
    assert len(out["aux_outputs"]) == len(ref["aux_outputs"]) == 5
    for key in ("pred_logits", "pred_boxes"):
        assert_close(out["interm_outputs"][key], ref["interm_outputs"][key], f"interm {key}", atol=FINAL_ATOL)


def test_backbone_projection_and_position_encoding(golden_run):
    rec, inter = golden_run["records"], load_golden("intermediates.pth")
    for level, name in enumerate(("res2", "res3", "res4", "res5")):
        feat = rec["backbone"][name]
        assert_close(feat[:, :8], inter[f"backbone.C{level + 2}.ch0_8"], f"backbone C{level + 2}")
        assert_close(feat.double().mean((2, 3)), inter[f"backbone.C{level + 2}.chan_mean"], f"C{level + 2} mean")
    for level, proj in enumerate(rec["input_proj"]):
        assert_close(proj[:, :8], inter[f"input_proj.{level}.ch0_8"], f"input_proj {level}")
        channels = inter[f"pos.{level}.channels"]
        assert_close(rec["pos"][level][:, channels], inter[f"pos.{level}.sel"], f"pos {level}")


def test_encoder_and_two_stage_selection(golden_run):
    rec, out, inter = golden_run["records"], golden_run["outputs"], load_golden("intermediates.pth")
    # padded tokens are never read downstream: we skip them (zeros), the official code computes them
    valid = ~rec["memory_mask"]
    assert_close(rec["memory"][..., :8][valid], inter["memory.ch0_8"][valid], "encoder memory")
    assert rec["memory"][~valid].abs().sum() == 0
    assert_close(rec["class_logits"][0], inter["enc.class_logits"], "enc class logits")
    assert torch.equal(out["topk_index"], inter["enc.topk_index"])
    assert_close(out["anchors_unsig"], inter["anchors_unsig"], "anchors")


def test_roi_initialisation(golden_run):
    rec, out, inter = golden_run["records"], golden_run["outputs"], load_golden("intermediates.pth")
    assert torch.equal(out["roi_levels"], inter["roi.pooler_level"])
    roi = rec["roi_features"]
    assert_close(roi[:, :10], inter["roi.features_q0_10"], "RoI features")
    assert_close(roi.mean(-1), inter["roi.features.slot_mean"], "RoI slot mean")
    assert_close(rec["rec_cls"][0][:, :10], inter["dec.init_rec_logits_q0_10"], "initial recognition logits")


def test_decoder_stages(golden_run):
    rec, inter = golden_run["records"], load_golden("intermediates.pth")
    references = [golden_run["outputs"]["interm_outputs"]["pred_boxes"]] + [
        layer["reference"] for layer in rec["decoder"]
    ]
    assert_close(torch.stack(references), inter["dec.references"], "references")
    assert_close(torch.stack(rec["norm"]), inter["dec.hs_detection_slot"], "normalised detection slots")
    assert_close(rec["ref_point_head"][0], inter["dec.query_pos_layer0"], "query pos, layer 0")
    for step in ("1_vlc_attn", "2_vlc_ffn", "3_intra_sa", "4_inter_sa", "5_cross_attn", "6_ffn"):
        assert_close(rec[step][0, :4], inter[f"dec.layer0.{step}"], f"layer 0 step {step}")


def test_post_processing_matches(golden_run):
    model, inputs = golden_run["model"], golden_run["inputs"]
    post = load_golden("post.pth")
    results = model.postprocess(golden_run["outputs"], post["orig_sizes_hw"])
    assert len(post["results"]) > 0
    for mine, ref in zip(results, post["results"], strict=True):
        assert torch.equal(mine["query_index"], ref["query_index"])
        assert torch.equal(mine["labels"], ref["labels"])
        assert torch.equal(mine["rec"], ref["rec"])
        assert_close(mine["scores"], ref["scores"], "scores", atol=FINAL_ATOL)
        # pixel coordinates: the 1e-6 relative agreement of the normalised outputs times ~1000 px
        assert_close(mine["boxes"], ref["boxes"], "boxes", atol=5e-3)
        assert_close(mine["beziers"], ref["beziers"], "polygons", atol=5e-3)
        assert_close(mine["rec_score"], ref["rec_score"], "rec scores", atol=FINAL_ATOL)
        assert_close(mine["rec_prob"][:10], ref["rec_prob_first10"], "rec probs", atol=FINAL_ATOL)
    # the detectron2-facing conversion of the same results keeps values and decodes texts
    originals = [{"height": int(h), "width": int(w)} for h, w in post["orig_sizes_hw"]]
    instances = model.inference(golden_run["outputs"], originals,
                                [tuple(s) for s in inputs["image_sizes_hw"].tolist()])
    first = instances[0]["instances"]
    assert first.image_size == tuple(post["orig_sizes_hw"][0].tolist())
    assert torch.equal(first.rec, post["results"][0]["rec"])
    assert first.texts[0] == model.vocabulary.decode(post["results"][0]["rec"][0])
