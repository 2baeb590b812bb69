"""tools/evaluate_predictions.py: labelled official blocks, runs, options, errors, per-image files, pictures."""
import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ests_d2.evaluation.lexicon import default_lexicon_roots
from ests_d2.evaluation.predictions import ImagePrediction, InstancePrediction, write_json
from ests_d2.evaluation.protocol import protocol_names
from ests_d2.evaluation.rrc_format import write_zip
from ests_d2.evaluation.visualize import COLOURS

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tools"))
import evaluate_predictions as cli  # noqa: E402


def rect(x0, y0, x1, y1):
    return np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], dtype=np.float32)


def gt_line(points, text):
    return ",".join(f"{int(x)},{int(y)}" for x, y in points) + ",####" + text


GT = {
    1: [(rect(10, 10, 110, 40), "HELLO"), (rect(10, 60, 110, 90), "WORLD"), (rect(200, 10, 260, 40), "###")],
    2: [(rect(10, 10, 90, 40), "SHOP")],
}


def inst(points, text, rec_conf=0.99, score=0.9):
    return InstancePrediction(points, float(np.float32(score)), text, rec_conf)


PREDICTIONS = [
    ImagePrediction(1, [inst(rect(11, 10, 110, 40), "HELLO"), inst(rect(10, 61, 110, 90), "W0RLD"),
                        inst(rect(300, 300, 350, 330), "JUNK")]),
    ImagePrediction(2, [inst(rect(10, 10, 90, 41), "SHOP", rec_conf=0.5)]),  # dropped by task 1's rec filter
]


@pytest.fixture
def files(tmp_path):
    gt_zip = tmp_path / "gt.zip"
    write_zip(str(gt_zip), {f"{i:07d}.txt": [gt_line(p, t) for p, t in lines] for i, lines in GT.items()})
    preds = tmp_path / "preds.json"
    write_json(str(preds), "ctw", PREDICTIONS)
    return gt_zip, preds


def run(capsys, *argv):
    code = cli.main([str(a) for a in argv] + ["--quiet"])
    out, err = capsys.readouterr()
    return code, out, err


def test_task1_run_reports_detection_and_e2e_apart_from_task0_detection(files, capsys):
    gt_zip, preds = files
    code, out, _ = run(capsys, preds, "--gt-zip", gt_zip, "--json")
    assert code == 0
    runs = json.loads(out)["runs"]
    assert [r["run"] for r in runs] == ["task 0 (detection)", "task 1 (spotting), no lexicon"]
    assert list(runs[0]["blocks"]) == ["detection"]
    assert list(runs[1]["blocks"]) == ["detection", "end_to_end"]
    task0, task1 = runs[0]["blocks"]["detection"], runs[1]["blocks"]
    assert (task0["matched"], task0["gt_care"], task0["det_care"]) == (3, 3, 4)
    assert (task1["detection"]["matched"], task1["detection"]["det_care"]) == (2, 3)  # SHOP: rec filter
    assert (task1["end_to_end"]["matched"], task1["end_to_end"]["gt_care"]) == (1, 3)
    assert task1["end_to_end"]["recall"] == 1 / 3 and task0["precision"] == 0.75


def test_table_marks_task1_detection(files, capsys):
    gt_zip, preds = files
    code, out, _ = run(capsys, preds, "--gt-zip", gt_zip)
    assert code == 0
    assert "detection*" in out and "end-to-end" in out and "task 0 (detection)" in out
    assert "GT care" in out and "det care" in out
    assert cli.TASKS["0"] == ("det",)


def write_generic_lexicon(folder: Path):
    folder.mkdir(exist_ok=True)
    (folder / "lexicon.txt").write_text("HELLO\nWORLD\nSHOP\n")
    (folder / "pair_list.txt").write_text("HELLO Hello\nWORLD World\nSHOP Shop\n")


def test_lexicon_only_run_with_the_default_generic_lexicon_location(files, capsys):
    gt_zip, preds = files
    write_generic_lexicon(gt_zip.parent / "lexicons")  # lexicons/ beside the GT zip is the default root
    code, out, _ = run(capsys, preds, "--gt-zip", gt_zip, "--dataset", "generic", "--task", "1",
                       "--lexicon", "full", "--json")
    assert code == 0
    (only,) = json.loads(out)["runs"]
    assert only["settings"]["lexicon"] == "full"
    assert only["blocks"]["end_to_end"]["matched"] == 3  # W0RLD -> World; generic has no rec filter


def test_lexicon_without_files_is_a_one_line_error(files, capsys):
    gt_zip, preds = files
    code, _, err = run(capsys, preds, "--gt-zip", gt_zip, "--lexicon", "full")
    looked = ", ".join(default_lexicon_roots(str(gt_zip)))
    assert code == 2
    assert err == ("evaluate_predictions.py: error: --lexicon full needs the ctw1500 lexicon files: give "
                   f"--lexicon-root (no complete lexicon folder at {looked})\n")


@pytest.mark.parametrize("option", [["--task", "1"], ["--lexicon", "full"], ["--det-threshold", "0.5"],
                                    ["--rec-confidence", "0.9"], ["--voc-size", "97"], ["--output-dir", "out"]])
def test_json_only_options_on_txt_input_are_refused(files, capsys, option):
    gt_zip, _ = files
    code, _, err = run(capsys, gt_zip, "--gt-zip", gt_zip, "--dataset", "ctw", *option)
    assert code == 2
    assert err == (f"evaluate_predictions.py: error: {option[0]} only apply to JSON input; per-image txt files are "
                   "scored as given (threshold, recognition filter and lexicon were applied when they were written)\n")


def test_lexicon_root_without_the_files_names_them(files, capsys, tmp_path):
    gt_zip, preds = files
    code, _, err = run(capsys, preds, "--gt-zip", gt_zip, "--dataset", "tt", "--lexicon", "weak",
                       "--lexicon-root", tmp_path)
    assert code == 2 and "weak_voc_new.txt" in err and "weak_voc_pair_list.txt" in err


def test_txt_input_scores_both_blocks_and_accepts_aliases(files, capsys):
    gt_zip, _ = files
    code, out, _ = run(capsys, gt_zip, "--gt-zip", gt_zip, "--dataset", "IC15", "--json")
    assert code == 0
    (only,) = json.loads(out)["runs"]
    assert only["settings"]["protocol"] == "icdar2015"
    assert only["blocks"]["end_to_end"]["hmean"] == 1.0 and only["blocks"]["detection"]["matched"] == 3


def test_unknown_dataset_lists_names_and_aliases(files, capsys):
    gt_zip, preds = files
    code, _, err = run(capsys, preds, "--gt-zip", gt_zip, "--dataset", "icdar2017")
    assert code == 2 and "ic15" in protocol_names() and "totaltext" in protocol_names()
    assert err == ("evaluate_predictions.py: error: --dataset: unknown dataset / protocol 'icdar2017'; expected one "
                   f"of: {protocol_names()}\n")


def test_invalid_json_names_file_and_position(files, capsys, tmp_path):
    gt_zip, _ = files
    bad = tmp_path / "bad.json"
    bad.write_text('{"format": "ests-eval-predictions/v1",\n "images": [}\n')
    code, _, err = run(capsys, bad, "--gt-zip", gt_zip)
    assert code == 1 and err.count("\n") == 1
    assert err.startswith(f"evaluate_predictions.py: error: {bad}: invalid JSON at line 2 column ")


@pytest.mark.parametrize("image_id", ['"195"', "1.5", "true"])
def test_non_integer_image_id_names_the_field(files, capsys, tmp_path, image_id):
    gt_zip, _ = files
    bad = tmp_path / "bad.json"
    bad.write_text('{"format": "ests-eval-predictions/v1", "images": [{"image_id": 1}, {"image_id": %s}]}' % image_id)
    code, _, err = run(capsys, bad, "--gt-zip", gt_zip, "--dataset", "ctw")
    assert code == 1 and err.count("\n") == 1 and f"{bad}: images[1].image_id" in err


def test_debug_shows_the_traceback(files, tmp_path):
    gt_zip, _ = files
    bad = tmp_path / "bad.json"
    bad.write_text("{")
    with pytest.raises(ValueError, match="invalid JSON"):
        cli.main([str(bad), "--gt-zip", str(gt_zip), "--debug", "--quiet"])


def test_an_unexpected_error_names_its_type_and_exits_1(files, capsys, monkeypatch):
    gt_zip, preds = files

    def broken(*_):
        raise ZeroDivisionError("division by zero")

    monkeypatch.setattr(cli, "print_report", broken)  # a bug in the report: not a mistake of the user's
    code, _, err = run(capsys, preds, "--gt-zip", gt_zip)
    assert code == 1
    assert err == "evaluate_predictions.py: error: ZeroDivisionError: division by zero (--debug shows the traceback)\n"


def test_per_image_json_and_csv(files, capsys, tmp_path):
    gt_zip, preds = files
    out_json, out_csv = tmp_path / "per_image.json", tmp_path / "per_image.csv"
    for path in (out_json, out_csv):
        assert run(capsys, preds, "--gt-zip", gt_zip, "--task", "1", "--per-image", path)[0] == 0
    rows = json.loads(out_json.read_text())
    assert [(r["image_id"], r["e2e_matched"]) for r in rows] == [(1, 1), (2, 0)]
    first = rows[0]
    assert (first["e2e_gt_care"], first["e2e_det_care"], first["det_matched"]) == (2, 3, 2)
    assert first["misread"] == [{"gt": "WORLD", "pred": "W0RLD"}]
    assert first["false"] == ["JUNK"] and rows[1]["missed"] == ["SHOP"]
    csv_rows = list(csv.DictReader(out_csv.open()))
    assert json.loads(csv_rows[0]["misread"]) == first["misread"] and csv_rows[1]["e2e_matched"] == "0"


def test_per_image_needs_csv_or_json(files, capsys, tmp_path):
    gt_zip, preds = files
    code, _, err = run(capsys, preds, "--gt-zip", gt_zip, "--per-image", tmp_path / "x.txt")
    assert code == 2
    assert err == (f"evaluate_predictions.py: error: --per-image {tmp_path / 'x.txt'}: the file name must end in "
                   ".csv or .json\n")


def test_visualize_one_png_per_image_in_category_colours(files, capsys, tmp_path):
    gt_zip, preds = files
    images = tmp_path / "images"
    images.mkdir()
    Image.new("RGB", (400, 360), (255, 255, 255)).save(images / "img_1.jpg")
    code, _, _ = run(capsys, preds, "--gt-zip", gt_zip, "--task", "1", "--visualize", tmp_path / "pics",
                     "--image-dir", images)
    assert code == 0
    assert sorted(p.name for p in (tmp_path / "pics").iterdir()) == ["0000001.png", "0000002.png"]
    first = Image.open(tmp_path / "pics" / "0000001.png").convert("RGB")
    assert first.size == (400, 360)  # drawn on the image found by the default pattern
    pixels = np.asarray(first)

    def has(colour, x, y):  # a prediction outline (3 px) passes through (x, y)
        return any(tuple(pixels[y + dy, x]) == colour for dy in (-1, 0, 1))

    assert has(COLOURS["matched"], 60, 10) and has(COLOURS["misread"], 60, 61) and has(COLOURS["false"], 325, 300)
    second = np.asarray(Image.open(tmp_path / "pics" / "0000002.png").convert("RGB"))
    assert (second == COLOURS["missed"]).all(axis=-1).any()  # SHOP, dropped by the rec filter


def test_scoring_path_imports_no_torch(files, tmp_path):
    gt_zip, preds = files
    code = (
        "import runpy, sys\n"
        f"sys.argv = ['evaluate_predictions.py', {str(preds)!r}, '--gt-zip', {str(gt_zip)!r}, '--quiet',"
        f" '--per-image', {str(tmp_path / 'p.csv')!r}, '--visualize', {str(tmp_path / 'v')!r}]\n"
        "import ests_d2.evaluation, ests_d2.evaluation.pipeline, ests_d2.evaluation.report\n"
        "try:\n"
        f"    runpy.run_path({str(REPO / 'tools' / 'evaluate_predictions.py')!r}, run_name='__main__')\n"
        "except SystemExit as e:\n"
        "    assert e.code == 0, e.code\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'torchvision', 'detectron2'))\n"
        "print('heavy', heavy)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr
    assert "heavy []" in done.stdout


def test_docs_example_follows_the_documented_schema(capsys, tmp_path):
    """docs/EVALUATION.md: the example reads, and its required fields are the schema's."""
    import re

    from ests_d2.evaluation.predictions import FORMAT, read_json
    from ests_d2.structures import CharVocabulary

    schema, example = re.findall(r"```json\n(.*?)```", (REPO / "docs" / "EVALUATION.md").read_text(), re.S)
    schema = json.loads(schema)
    assert schema["properties"]["format"]["const"] == FORMAT
    instance_schema = schema["properties"]["images"]["items"]["properties"]["instances"]["items"]
    path = tmp_path / "example.json"
    path.write_text(example)
    dataset, images = read_json(str(path), CharVocabulary.from_config(97))
    assert dataset == "ic15" and [im.image_id for im in images] == [195, 196]
    for record in json.loads(example)["images"][0]["instances"]:
        assert set(instance_schema["required"]) <= set(record) and set(record) <= set(instance_schema["properties"])
    assert images[0].instances[1].text == "GNS"  # decoded from 'rec', padding skipped


def test_rec_ids_decode_with_the_chosen_vocabulary_and_script_protocols_score(tmp_path, capsys):
    from ests_d2.structures import load_vocabulary

    vintext = load_vocabulary("vintext")
    gt_zip = tmp_path / "gt_vi.zip"
    write_zip(str(gt_zip), {"0000001.txt": [gt_line(rect(10, 10, 110, 40), "Hàng"), gt_line(rect(10, 60, 110, 90),
                                                                                         "Đàn")]})
    records = [{"polygon": rect(10, 10, 110, 40).tolist(), "score": 0.9, "rec": vintext.encode("Hàng", 25),
                "rec_conf": 0.99},
               {"polygon": rect(10, 60, 110, 90).tolist(), "score": 0.9, "rec": vintext.encode("Dan", 25),
                "rec_conf": 0.99}]
    preds = tmp_path / "preds_vi.json"
    preds.write_text(json.dumps({"format": "ests-eval-predictions/v1", "dataset": "vintext",
                                 "images": [{"image_id": 1, "instances": records}]}), encoding="utf-8")
    code, out, err = run(capsys, preds, "--gt-zip", gt_zip, "--vocabulary", "vintext", "--json")
    assert code == 0, err
    report = json.loads(out)
    assert report["protocol"] == "vintext"  # named by the JSON's 'dataset' field, no --dataset given
    blocks = {r["run"]: r["blocks"][r["run"]] for r in report["runs"]}
    assert blocks["text_det"]["recall"] == 1.0
    assert blocks["text_e2e"]["recall"] == 0.5  # "Hàng" read with its diacritics; "Dan" is not "Đàn"
    # the same ids decoded as English give other texts: nothing matches end to end
    code, out, _ = run(capsys, preds, "--gt-zip", gt_zip, "--vocabulary", "en", "--voc-size", vintext.num_classes,
                       "--json")
    assert code == 2  # 107 classes are not the EN vocabulary's 97, said in the options' names
    code, _, err = run(capsys, preds, "--gt-zip", gt_zip, "--vocabulary", "vintext", "--visualize", tmp_path / "v")
    assert code == 2 and "--visualize not available for the non-Latin protocols" in err
