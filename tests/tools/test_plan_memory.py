"""tools/plan_memory.py: the worst-case shape, the synthetic batch contract, the budget rule, and a real
CPU sweep of the tiny config (2 small sizes, AMP off / on)."""
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ests_d2.config import load_ests_config
from ests_d2.utils.memory_planner import (
    fit_curve, parse_bytes, recommend, synthetic_batch, worst_case_pixels, worst_case_shape,
)

REPO = Path(__file__).resolve().parents[2]
TINY_CONFIG = REPO / "configs" / "ESTS" / "Synthetic-Tiny.yaml"
GIB = 2**30


def test_worst_case_shape_caps_the_long_side():
    assert worst_case_shape(800, 1333) == (800, 1333)
    assert worst_case_shape(1600, 1333) == (1333, 1333)  # a short side above the cap is capped too
    assert worst_case_pixels((640, 800, 704), 1000) == 800 * 1000


def test_parse_bytes():
    assert parse_bytes("24GB") == parse_bytes("24GiB") == 24 * GIB
    assert parse_bytes("512MB") == 512 * 2**20
    assert parse_bytes("1e9") == 1e9


def test_synthetic_batch_follows_the_mapper_contract():
    cfg = load_ests_config(str(TINY_CONFIG))
    batch = synthetic_batch(cfg, 96, 160, num_images=2, num_instances=7)
    assert len(batch) == 2
    for item in batch:
        assert item["image"].dtype == torch.uint8 and item["image"].shape == (3, 96, 160)
        inst = item["instances"]
        assert inst.image_size == (96, 160) and len(inst) == 7
        boxes = inst.gt_boxes.tensor
        assert (boxes[:, 0] >= 0).all() and (boxes[:, 2] <= 160).all() and (boxes[:, 3] <= 96).all()
        assert (boxes[:, 2] > boxes[:, 0]).all() and (boxes[:, 3] > boxes[:, 1]).all()
        assert inst.gt_classes.dtype == torch.int64 and (inst.gt_classes == 0).all()
        assert inst.gt_beziers.shape == (7, 16) and inst.gt_beziers.dtype == torch.float32
        # the Bezier control points lie on the box edges
        assert torch.allclose(inst.gt_beziers[:, 0::2].min(1).values, boxes[:, 0])
        assert torch.allclose(inst.gt_beziers[:, 1::2].max(1).values, boxes[:, 3])
        assert inst.gt_rec.shape == (7, cfg.MODEL.ESTS.MAX_TEXT_LEN) and inst.gt_rec.dtype == torch.int64
        assert (inst.gt_rec < cfg.MODEL.ESTS.VOC_SIZE - 2).all()  # real characters in every slot


def test_fit_curve_interpolates_and_extrapolates():
    peak_at, pixels_for = fit_curve([100, 300, 200], [3.0, 7.0, 4.0])  # any order
    assert peak_at(150) == pytest.approx(3.5)
    assert peak_at(400) == pytest.approx(10.0)  # the last segment's slope (3 per 100 px)
    assert peak_at(0) == pytest.approx(2.0)  # the first segment's slope (1 per 100 px)
    assert pixels_for(5.5) == pytest.approx(250)
    assert pixels_for(13.0) == pytest.approx(500)
    assert pixels_for(2.5) == pytest.approx(50)
    assert pixels_for(1.5) is None  # below the line's value at zero pixels


def test_recommend_reads_the_budget_off_the_curve():
    # peak = 1 GiB + 1 GiB per megapixel in the batch, measured at two sizes with 2 images per GPU
    measured = [{"images": 2, "height": h, "width": 1000, "peak_bytes": GIB * (1 + 2 * h * 1000 / 1e6)}
                for h in (500, 1000)]
    rec = recommend(measured, budget_bytes=5.4 * GIB, short_sides=(800, 1000), max_size=1000, images_per_gpu=2,
                    headroom=0.0, size_step=10)
    # 4.4 GiB above the fixed cost = 4.4 MP = 2 images of 2.2 MP; the short side stops at 1000: 1000 x 2200
    assert rec["max_size_train"] == 2200
    assert rec["fits_configured"] and rec["images_per_gpu"] == 4  # 4.4 MP / 1 MP per image
    assert rec["note"].startswith("extrapolated to 2.2x the largest measured batch")
    tight = recommend(measured, budget_bytes=2.0 * GIB, short_sides=(800, 1000), max_size=1000, images_per_gpu=2,
                      headroom=0.1, size_step=10)
    assert not tight["fits_configured"] and tight["images_per_gpu"] == 0
    # 2 / 1.1 - 1 = 0.818 GiB -> 0.409 MP per image: 640 x 640 = 0.4096 MP just misses, 630 x 630 fits
    assert tight["max_size_train"] == 630
    assert "note" not in tight  # within the measured range
    assert recommend(measured[:1], GIB, (800,), 1000, 2) == {"error": "fewer than two successful measurements"}


@pytest.mark.slow
def test_plan_memory_measures_real_cpu_steps_and_recommends(tmp_path):
    shrink = ["MODEL.ESTS.ENC_LAYERS", "1", "MODEL.ESTS.DEC_LAYERS", "1", "MODEL.ESTS.NUM_QUERIES", "10",
              "MODEL.ESTS.NUM_SELECT", "10", "MODEL.ESTS.DN.NUMBER", "2", "INPUT.MAX_SIZE_TRAIN", "128"]
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.run(
        [sys.executable, str(REPO / "tools" / "plan_memory.py"), "--config-file", str(TINY_CONFIG),
         "--sizes", "64", "96", "--cases", "fp32+dn", "amp+dn", "--images-per-gpu", "1", "--instances", "3",
         "--steps", "1", "--threads", "1", "--budget", "64GB", "--output", str(tmp_path), "--opts", *shrink],
        capture_output=True, text=True, env=env, cwd=REPO, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    plan = json.loads((tmp_path / "memory_plan.json").read_text())
    rows = plan["measurements"]
    assert [(r["case"], r["short_side"]) for r in rows] == [("fp32+dn", 64), ("fp32+dn", 96), ("amp+dn", 64),
                                                            ("amp+dn", 96)]
    for r in rows:
        assert "error" not in r, r
        assert (r["height"], r["width"]) == ((64, 128) if r["short_side"] == 64 else (96, 128))
        assert r["device"] == "cpu" and r["measure"] == "process peak RSS" and r["dn"]
        assert r["amp_dtype"] == ("bfloat16" if r["case"] == "amp+dn" else None)
        # the peak includes the interpreter, torch and the model: well above the RSS before the step
        assert 0.1 * GIB < r["peak_bytes"] < 16 * GIB and r["peak_bytes"] >= r["rss_before_steps_bytes"]
        assert math.isfinite(r["loss"])
    for case in ("fp32+dn", "amp+dn"):
        assert plan["recommendations"][case]["fits_configured"]  # a tiny model in 64 GB
        assert f"\n{case}" in proc.stdout or f" {case}  " in proc.stdout  # a table row
    assert "rule: peak memory interpolated" in proc.stdout
    curve = np.asarray(Image.open(tmp_path / "memory_curve.png").convert("L"))
    assert curve.shape == (450, 700) and curve.std() > 5
