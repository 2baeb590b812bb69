"""tools/demo_report.py: the words `make demo` read, pictures of the first test images, plots, one summary line."""
import json
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ests_d2.evaluation import predictions as neutral
from ests_d2.evaluation.gt_zip import write_gt_zip
from ests_d2.utils.demo_report import build_demo_report

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tools"))
import demo_report as demo_report_tool  # noqa: E402


def _box(x0, y0, x1, y1):
    return [x0, y0, x1, y0, x1, y1, x0, y1]  # clockwise on screen


# image id -> GT words; each word i of an image sits in the box at x = 10 + 60 i
GT = {1: ["OPEN", "shop"], 2: ["CITY"], 3: ["bus"]}
# predictions: image 1 reads OPEN (case is ignored) and misreads shop; image 2 finds nothing; image 3 reads
# bus and adds one false detection; one detection of image 3 is below the generic threshold (0.415)
DETS = {1: [(0, "open", 0.9), (1, "shap", 0.8)], 2: [], 3: [(0, "bus", 0.7), (2, "zz", 0.6), (1, "no", 0.3)]}


def _word_box(i):
    return _box(10 + 60 * i, 20, 60 + 60 * i, 40)


def write_run(root: Path) -> dict:
    """A finished demo run: images, GT zip, neutral predictions and metrics.json."""
    images = root / "images"
    images.mkdir(parents=True)
    files = {}
    for image_id in GT:
        files[image_id] = str(images / f"test_{image_id:05d}.jpg")
        Image.new("RGB", (200, 64), (90, 120, 150)).save(files[image_id])
    gt_zip = str(root / "gt.zip")
    write_gt_zip(gt_zip, {i: [(_word_box(k), w) for k, w in enumerate(words)] for i, words in GT.items()})
    preds = [neutral.ImagePrediction(i, [neutral.InstancePrediction(np.asarray(_word_box(k), np.float32).reshape(-1, 2),
                                                                    score, text) for k, text, score in dets])
             for i, dets in DETS.items()]
    predictions = str(root / "run" / "inference" / "demo_test" / "text_predictions.json")
    neutral.write_json(predictions, "generic", preds)
    lines = [{"iteration": 19, "total_loss": 30.0, "lr": 2e-4}, {"iteration": 39, "total_loss": 20.0, "lr": 2e-4}]
    (root / "run" / "metrics.json").write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    return {"predictions": predictions, "gt_zip": gt_zip, "files": files, "run": str(root / "run")}


def test_report_counts_the_words_read_and_draws_the_first_images(tmp_path):
    run = write_run(tmp_path)
    report = build_demo_report(run["predictions"], run["gt_zip"], run["files"], str(tmp_path / "pictures"),
                               str(tmp_path / "run" / "metrics.json"), str(tmp_path / "plots"), num_pictures=2)
    # 4 GT words; read: OPEN, bus; care detections above 0.415: open, shap, bus, zz
    assert (report.read, report.words) == (2, 4)
    assert report.precision == pytest.approx(0.5) and report.recall == pytest.approx(0.5)
    assert [Path(p).name for p in report.pictures] == ["test_00001.png", "test_00002.png"]
    picture = np.asarray(Image.open(report.pictures[0]))
    assert picture.shape == (64, 200, 3) and len(np.unique(picture.reshape(-1, 3), axis=0)) > 10  # drawn on
    assert [Path(p).name for p in report.plots] == ["losses.png", "learning_rate.png"]
    line = report.summary_line(str(tmp_path / "pictures"), str(tmp_path / "plots"))
    assert line.startswith("read 2 of 4 words (") and "hmean 0.500" in line and line.endswith("plots")


def test_report_names_a_missing_test_image(tmp_path):
    run = write_run(tmp_path)
    del run["files"][1]
    with pytest.raises(FileNotFoundError, match="test image 1"):
        build_demo_report(run["predictions"], run["gt_zip"], run["files"], str(tmp_path / "pictures"))


def test_tool_prints_the_summary_line_for_a_registered_dataset(tmp_path, capsys):
    from detectron2.data import DatasetCatalog, MetadataCatalog

    run = write_run(tmp_path)
    if "demo_test" not in DatasetCatalog.list():
        DatasetCatalog.register("demo_test", lambda: [{"image_id": i, "file_name": f} for i, f in run["files"].items()])
    MetadataCatalog.get("demo_test").set(eval_gt_zip=run["gt_zip"])
    try:
        assert demo_report_tool.main([run["run"], "--dataset", "demo_test", "--num-pictures", "3"]) == 0
    finally:
        DatasetCatalog.remove("demo_test")
        MetadataCatalog.remove("demo_test")
    out = capsys.readouterr().out.strip()
    assert out == (f"read 2 of 4 words (end-to-end, no lexicon: precision 0.500, recall 0.500, hmean 0.500); "
                   f"pictures in {run['run']}/pictures; plots in {run['run']}/plots")
    assert sorted(p.name for p in Path(run["run"], "pictures").iterdir()) == [
        "test_00001.png", "test_00002.png", "test_00003.png"]


def test_tool_error_is_one_line_when_the_run_was_not_evaluated(tmp_path, capsys):
    assert demo_report_tool.main([str(tmp_path), "--dataset", "synthetic_text_test"]) == 1
    predictions = tmp_path / "inference" / "synthetic_text_test" / "text_predictions.json"
    assert capsys.readouterr().err == (f"demo_report.py: error: {predictions} does not exist: has the run been "
                                       "evaluated on synthetic_text_test?\n")


def test_tool_error_names_an_unregistered_dataset_without_quotes(tmp_path, capsys):
    predictions = tmp_path / "inference" / "no_such_set" / "text_predictions.json"
    predictions.parent.mkdir(parents=True)
    predictions.write_text("{}")
    assert demo_report_tool.main([str(tmp_path), "--dataset", "no_such_set"]) == 1
    assert capsys.readouterr().err == "demo_report.py: error: --dataset no_such_set: not a registered dataset\n"
