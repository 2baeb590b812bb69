"""The end of `make demo`: how many test words the trained spotter read, pictures of a few test images, plots.

Everything comes from what training and its evaluation left in the output folder: the neutral predictions
``inference/<dataset>/text_predictions.json`` (scored again here with the official end-to-end run without
lexicon, so the count and the pictures come from one scoring), the dataset's GT zip and images, and the
run's ``metrics.json``.
"""
import os
from dataclasses import dataclass
from typing import Dict, List, Optional

from ests_d2.evaluation import predictions as neutral
from ests_d2.evaluation.pipeline import RunResult, evaluate_runs, load_gt_zip
from ests_d2.evaluation.protocol import resolve_settings
from ests_d2.evaluation.visualize import draw_image
from ests_d2.structures import CharVocabulary

from .metrics_plot import plot_metrics


@dataclass
class DemoReport:
    """What the summary line says, and the files it points to."""

    read: int  # care GT words matched with the right transcription
    words: int  # care GT words
    hmean: float
    precision: float
    recall: float
    pictures: List[str]
    plots: List[str]

    def summary_line(self, pictures_dir: str, plots_dir: Optional[str]) -> str:
        line = (f"read {self.read} of {self.words} words (end-to-end, no lexicon: precision {self.precision:.3f}, "
                f"recall {self.recall:.3f}, hmean {self.hmean:.3f}); pictures in {pictures_dir}")
        return line + (f"; plots in {plots_dir}" if plots_dir and self.plots else "")


def score_predictions(predictions_json: str, gt_zip: str, voc_size: int = 97):
    """(GT, the official e2e run without lexicon) of a neutral predictions file against a GT zip."""
    dataset, images = neutral.read_json(predictions_json, CharVocabulary.from_config(voc_size))
    if not dataset:
        raise ValueError(f"{predictions_json}: no 'dataset' field (the evaluation protocol)")
    gt = load_gt_zip(gt_zip)
    (result,) = evaluate_runs(images, gt, [resolve_settings(dataset, "e2e")], voc_size=voc_size, gt_name=gt_zip)
    return gt, result


def write_demo_pictures(result: RunResult, gt, out_dir: str, image_files: Dict[int, str], count: int) -> List[str]:
    """Pictures of the first ``count`` test images by id (not a chosen few): polygons, read texts, GT misses.

    ``image_files`` maps image id -> image file (e.g. from the dataset dicts).
    """
    os.makedirs(out_dir, exist_ok=True)
    written = []
    for key in sorted(result.scored.images, key=int)[:count]:
        image_path = image_files.get(int(key))
        if image_path is None or not os.path.isfile(image_path):
            raise FileNotFoundError(f"test image {int(key)}: file {image_path!r} not found")
        path = os.path.join(out_dir, os.path.splitext(os.path.basename(image_path))[0] + ".png")
        draw_image(result, gt, key, image_path).save(path)
        written.append(path)
    return written


def build_demo_report(predictions_json: str, gt_zip: str, image_files: Dict[int, str], pictures_dir: str,
                      metrics_json: Optional[str] = None, plots_dir: Optional[str] = None,
                      num_pictures: int = 4) -> DemoReport:
    """Score, draw ``num_pictures`` test images and (if ``metrics_json`` exists) plot the run's metrics."""
    gt, result = score_predictions(predictions_json, gt_zip)
    pictures = write_demo_pictures(result, gt, pictures_dir, image_files, num_pictures)
    plots = plot_metrics(metrics_json, plots_dir) if metrics_json and os.path.isfile(metrics_json) else []
    e2e = result.scored.e2e
    metrics = e2e.metrics()
    return DemoReport(e2e.matched, e2e.care_gt, metrics["hmean"], metrics["precision"], metrics["recall"],
                      pictures, plots)
