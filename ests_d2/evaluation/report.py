"""What a scoring run tells a person: labelled blocks with their counts, and per-image results.

The official script prints two blocks per scoring run: detection and end-to-end. Which run they come from
matters (docs/EVALUATION.md, oddity 18): the detection numbers ESTS publishes come from a task-0 run (no
recognition filter), while a task-1 run's detection block only counts instances that passed the
recognition filter and the lexicon. Every block here is therefore labelled with its run.
"""
import csv
import json
import os
from dataclasses import asdict
from typing import Dict, List, Sequence

from .pipeline import RunResult
from .rrc_format import TextLine

PER_IMAGE_FORMATS = (".csv", ".json")
_LIST_COLUMNS = ("misread", "missed", "false")
PER_IMAGE_COLUMNS = (
    "run", "image_id", "det_gt_care", "det_det_care", "det_matched",
    "e2e_gt_care", "e2e_det_care", "e2e_matched",
) + _LIST_COLUMNS


def run_label(result: RunResult) -> str:
    """``task 0 (detection)`` / ``task 1 (spotting), lexicon strong``: which official run a block is from."""
    s = result.settings
    if s.task == "det":
        return "task 0 (detection)"
    return "task 1 (spotting), " + (f"lexicon {s.lexicon}" if s.lexicon else "no lexicon")


def blocks(result: RunResult, scored_as_given: bool = False) -> Dict[str, Dict[str, float]]:
    """The official blocks of a run with their counts: task 0 -> detection; task 1 / txt -> detection + e2e."""
    out = {"detection": result.scored.det.report()}
    if scored_as_given or result.settings.task == "e2e":
        out["end_to_end"] = result.scored.e2e.report()
    return out


def summary_rows(results: Sequence[RunResult], labels: Sequence[str], scored_as_given: bool = False) -> List[list]:
    """Table rows (run, block, P, R, H, matched, GT care, det care) of every block of every run."""
    rows = []
    for result, label in zip(results, labels):
        for name, b in blocks(result, scored_as_given).items():
            if name == "detection" and result.settings.task == "e2e" and not scored_as_given:
                name = "detection*"  # footnoted: not the published (task-0) detection number
            scores = [f"{b[k]:.4f}" for k in ("precision", "recall", "hmean")]
            rows.append([label, name.replace("_", "-"), *scores, b["matched"], b["gt_care"], b["det_care"]])
    return rows


SUMMARY_HEADERS = ["run", "block", "precision", "recall", "hmean", "matched", "GT care", "det care"]
TASK1_DETECTION_NOTE = (
    "* detection block of a task-1 run: only instances that pass the recognition filter (and lexicon) count; "
    "the detection number ESTS publishes is the task-0 one."
)


def image_rows(result: RunResult, gt: Dict[str, List[TextLine]], label: str) -> List[dict]:
    """One row per GT image: care counts and matches of both passes, and the e2e failures with their texts.

    ``misread`` holds ``{"gt", "pred"}`` pairs matched by IoU but with the wrong text; ``missed`` the texts of
    care GT without an IoU match; ``false`` the texts of care detections without a match. They come from the
    end-to-end pass for task-1 / txt runs and from the detection pass for task-0 runs.
    """
    use_e2e = result.settings.task == "e2e"
    rows = []
    for key, m in result.scored.images.items():
        dets = result.predictions.get(key, [])
        e2e, det = m.counts()
        row = {"run": label, "image_id": int(key), "det_gt_care": det.care_gt, "det_det_care": det.care_det,
               "det_matched": det.matched, "e2e_gt_care": None, "e2e_det_care": None, "e2e_matched": None}
        if use_e2e:
            row.update(e2e_gt_care=e2e.care_gt, e2e_det_care=e2e.care_det, e2e_matched=e2e.matched)
            pairs, gt_dc, det_dc = [(g, d) for g, d, _ in m.e2e_pairs], m.gt_dont_care_e2e, m.det_dont_care_e2e
            row["misread"] = [{"gt": m.gt_texts[g], "pred": dets[d].text} for g, d, ok in m.e2e_pairs if not ok]
        else:
            pairs, gt_dc, det_dc = m.det_pairs, m.gt_dont_care_det, m.det_dont_care_det
            row["misread"] = []
        matched_gt, matched_det = {g for g, _ in pairs}, {d for _, d in pairs}
        row["missed"] = [gt[key][g].text for g in range(len(gt_dc)) if not gt_dc[g] and g not in matched_gt]
        row["false"] = [dets[d].text for d in range(len(det_dc)) if not det_dc[d] and d not in matched_det]
        rows.append(row)
    return rows


def write_image_rows(path: str, rows: List[dict]) -> None:
    """``.json``: a list of row objects; ``.csv``: one line per row, list columns as JSON text."""
    ext = os.path.splitext(path)[1].lower()
    if ext not in PER_IMAGE_FORMATS:
        raise ValueError(f"--per-image {path}: the file name must end in .csv or .json")
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    if ext == ".json":
        with open(path, "w", encoding="utf-8") as f:
            json.dump(rows, f, indent=1, ensure_ascii=False)
        return
    with open(path, "w", encoding="utf-8", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=PER_IMAGE_COLUMNS)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: json.dumps(v, ensure_ascii=False) if k in _LIST_COLUMNS else ("" if v is None else v)
                             for k, v in row.items()})


def run_record(result: RunResult, label: str, scored_as_given: bool = False) -> dict:
    """JSON-ready record of one run: label, settings and blocks."""
    s = result.settings
    settings = {"protocol": s.protocol, "word_spotting": s.word_spotting} if scored_as_given else asdict(s)
    return {"run": label, "settings": settings, "blocks": blocks(result, scored_as_given)}
