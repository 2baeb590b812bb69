"""Quality bar: the real native annotations of ../shared/data/scene_text/gt_native, prepared by the engine, agree
with the reference COCO-text jsons beside them and with the official eval GT zips."""
import csv
import json
import zipfile

import numpy as np
import pytest

from ests_d2.data.preparation.bezier_fit import fit_text_polygon
from ests_d2.data.preparation.prepare import prepare_dataset
from ests_d2.data.preparation.writers import write_eval_gt
from ests_d2.evaluation.rrc_format import read_zip
from ests_d2.structures import CharVocabulary
from tests.shared_paths import require_shared

# subset -> native format. Total-Text's eval member 0000177.txt belongs to img600.jpg (see MANIFEST.csv)
SUBSETS = {"ic15_test": "icdar2015", "ic15_train": "icdar2015", "totaltext_test": "totaltext-points",
           "ctw1500_test": "ctw1500"}
# Measured on these files and documented in datasets/README.md (fit error = boundary Hausdorff distance, px).
DOCUMENTED_MAX_FIT_ERROR = {"totaltext_test": 2.6, "ctw1500_test": 12.6}
QUAD_MAX_FIT_ERROR = 1.5


@pytest.fixture(scope="module")
def scene_text():
    return require_shared("data/scene_text")


@pytest.fixture(scope="module")
def prepared(scene_text, tmp_path_factory):
    """subset -> PreparedDataset, each prepared once for the module."""
    cache = {}

    def get(subset):
        if subset not in cache:
            cache[subset] = _prepare(scene_text, subset, tmp_path_factory.mktemp(subset))
        return cache[subset]

    return get


def _pairs_file(scene_text, subset, tmp_path):
    rows = [r for r in csv.DictReader(open(scene_text / "MANIFEST.csv")) if r["subset"] == subset]
    path = tmp_path / "pairs.csv"
    path.write_text("".join(f"{r['native_gt'].split('/')[-1]},{r['image'].split('/')[-1]}\n" for r in rows))
    return str(path)


def _prepare(scene_text, subset, tmp_path):
    pairs = _pairs_file(scene_text, subset, tmp_path) if subset == "totaltext_test" else ""
    return prepare_dataset(SUBSETS[subset], str(scene_text / "gt_native" / subset), str(scene_text / "images" / subset),
                           CharVocabulary.from_config(97), pairs_file=pairs)


@pytest.mark.parametrize("subset", sorted(SUBSETS))
def test_prepared_json_agrees_with_the_reference(scene_text, prepared, subset):
    result = prepared(subset)
    reference = json.load(open(scene_text / "coco_text" / f"{subset}.json", encoding="utf-8"))
    assert [(i["id"], i["file_name"], i["width"], i["height"]) for i in result.images] == \
        [(i["id"], i["file_name"], i["width"], i["height"]) for i in reference["images"]]
    ref_anns = sorted(reference["annotations"], key=lambda a: (a["image_id"], a["id"]))
    assert len(result.annotations) == len(ref_anns)
    for ours, ref in zip(result.annotations, ref_anns):
        where = (subset, ref["image_id"], ref["text"])
        for key in ("image_id", "iscrowd", "rec", "text", "segmentation", "bbox", "n_top_pts", "n_bottom_pts"):
            assert ours[key] == ref[key], (where, key)
        assert ours["area"] == pytest.approx(ref["area"]), where
        # both rounded to 2 decimals: equal up to one rounding step
        np.testing.assert_allclose(ours["bezier_pts"], ref["bezier_pts"], atol=0.0101, err_msg=str(where))
        np.testing.assert_allclose(ours["polys"], ref["polys"], atol=0.0101, err_msg=str(where))


@pytest.mark.parametrize("subset", sorted(SUBSETS))
def test_fit_errors_within_the_documented_bounds(prepared, subset):
    result = prepared(subset)
    assert not result.skipped
    if subset.startswith("ic15"):
        assert result.quad_fit_errors and max(result.quad_fit_errors) <= QUAD_MAX_FIT_ERROR
        assert not result.fit_errors
    else:
        assert max(result.fit_errors + result.quad_fit_errors) <= DOCUMENTED_MAX_FIT_ERROR[subset]


def test_ic15_eval_gt_zip_is_byte_identical_to_the_official_members(scene_text, prepared, tmp_path):
    result = prepared("ic15_test")
    ours = tmp_path / "gt.zip"
    write_eval_gt(str(ours), result)
    with zipfile.ZipFile(ours) as mine, zipfile.ZipFile(scene_text / "eval_gt_subset" / "gt_icdar2015.zip") as official:
        assert sorted(mine.namelist()) == sorted(official.namelist())
        for member in official.namelist():
            assert mine.read(member) == official.read(member), member


def _canonical_ring(points):
    """A ring as a direction- and start-free key: the lexicographically smallest rotation of either direction."""
    pts = [tuple(map(float, p)) for p in np.asarray(points).reshape(-1, 2)]
    rotations = [seq[k:] + seq[:k] for seq in (pts, pts[::-1]) for k in range(len(seq))]
    return min(rotations)


@pytest.mark.parametrize("subset, official",
                         [("totaltext_test", "gt_totaltext.zip"), ("ctw1500_test", "gt_ctw1500.zip")])
def test_curved_eval_gt_zip_has_the_official_polygons_and_words(scene_text, prepared, subset, official, tmp_path):
    result = prepared(subset)
    ours = tmp_path / "gt.zip"
    write_eval_gt(str(ours), result)
    mine = read_zip(str(ours), strict=True)
    theirs = read_zip(str(scene_text / "eval_gt_subset" / official), strict=False)
    assert mine.keys() == theirs.keys()
    for key in theirs:
        assert [(_canonical_ring(line.points), line.text) for line in mine[key]] == \
            [(_canonical_ring(line.points), line.text) for line in theirs[key]], key


def test_auto_start_recovers_the_reference_rings_of_most_words(scene_text):
    """LabelMe / CSV / JSONL polygons may start anywhere: ``start="auto"`` finds the annotated top-left corner of
    148 of the 156 words that are not don't care (documented in datasets/README.md), from any start and direction."""
    found, total = 0, 0
    for subset in sorted(SUBSETS):
        reference = json.load(open(scene_text / "coco_text" / f"{subset}.json", encoding="utf-8"))
        for k, ann in enumerate(a for a in reference["annotations"] if not a["iscrowd"]):
            ring = np.asarray(ann["segmentation"][0]).reshape(-1, 2)
            shuffled = np.roll(ring, -(k % len(ring)), axis=0)[:: 1 if k % 2 else -1]
            found += np.array_equal(fit_text_polygon(shuffled, start="auto").ring, ring)
            total += 1
    assert (found, total) == (148, 156)
