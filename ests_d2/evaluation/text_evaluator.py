"""detectron2 evaluator that reproduces the official ESTS text-spotting evaluation."""
import itertools
from dataclasses import asdict
import json
import logging
import os
from collections import OrderedDict
from typing import Optional, Sequence

from detectron2.config import configurable
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.evaluation import DatasetEvaluator
from detectron2.utils import comm
from detectron2.utils.logger import create_small_table

from . import predictions as neutral
from ests_d2.structures import CharVocabulary, build_vocabulary

from .gt_zip import gt_files_from_dataset_dicts
from .pipeline import load_gt_zip, parse_files, run_evaluation
from .protocol import DEFAULTS, canonical_protocol, resolve_runs
from .rrc_format import write_zip

logger = logging.getLogger(__name__)


class TextSpottingEvaluator(DatasetEvaluator):
    """Detection and end-to-end P / R / H exactly as the official ESTS evaluation computes them.

    Reads the dataset metadata ``eval_protocol`` ("totaltext", "ctw1500", "icdar2015", "generic"),
    ``eval_gt_zip`` (official GT zip; without it the GT is derived from the dataset dicts),
    ``lexicon_root`` (official ``lexicons/`` folder) and ``voc_size``.
    Consumes per image ``{"instances": Instances}`` with ``scores``, ``polygons`` (n, 32), ``texts``,
    ``rec_scores`` (n, T) and ``rec_probs`` (n, T, V) in original image coordinates.

    ``evaluate()`` returns e.g. ``{"text_det": {"precision", "recall", "hmean"}, "text_e2e": {...},
    "text_e2e_full": {...}}`` (fractions, as the official script prints them) and writes into
    ``output_dir`` the neutral predictions (``text_predictions.json``), each run's official zip
    (``{run}_det.zip``), the derived GT zip if any, and ``text_results.json`` with the settings.
    """

    @configurable
    def __init__(
        self,
        dataset_name: str,
        *,
        tasks: Sequence[str] = ("det", "e2e"),
        lexicons: Sequence[str] = (),
        det_threshold: float = -1,
        rec_confidence: float = -1,
        word_spotting: int = -1,
        distributed: bool = True,
        output_dir: Optional[str] = None,
        vocabulary: Optional[CharVocabulary] = None,
    ):
        """
        Args:
            dataset_name: a registered dataset with the metadata above.
            tasks: "det" (official task 0: no recognition filter) and/or "e2e" (task 1).
            lexicons: lexicon names for extra e2e runs ("full", "weak", "generic", "strong").
            det_threshold, rec_confidence, word_spotting: overrides; -1 keeps the official value.
            distributed: gather predictions from all workers with ``comm.gather``.
            output_dir: where the prediction files and results go (nothing written if None).
            vocabulary: the model's vocabulary (decodes derived GT); default: EN with the dataset's voc_size.
        """
        meta = MetadataCatalog.get(dataset_name)
        self._dataset_name = dataset_name
        self._protocol = canonical_protocol(meta.get("eval_protocol", "generic"))
        self._gt_zip = meta.get("eval_gt_zip", None)
        self._lexicon_root = meta.get("lexicon_root", None)
        self._voc_size = int(meta.get("voc_size", 97))
        self._vocabulary = vocabulary or CharVocabulary.from_config(self._voc_size)
        if self._vocabulary.num_classes != self._voc_size:
            raise ValueError(f"dataset '{dataset_name}' has voc_size {self._voc_size} but the model's "
                             f"{self._vocabulary.describe()}")
        self._runs = resolve_runs(
            self._protocol, list(tasks), list(lexicons),
            det_threshold=det_threshold, rec_confidence=rec_confidence, word_spotting=word_spotting,
        )
        # IC15 lexicons weigh their distance with rec_prob: keep those rows in the neutral predictions.
        self._keep_rec_prob = DEFAULTS[self._protocol].weighted_edit_distance
        self._distributed = distributed
        self._output_dir = output_dir
        self._predictions = []

    @classmethod
    def from_config(cls, cfg, dataset_name, distributed=True, output_dir=None):
        t = cfg.TEST.TEXT
        return {
            "dataset_name": dataset_name,
            "tasks": list(t.TASKS),
            "lexicons": list(t.LEXICONS),
            "det_threshold": t.DET_THRESHOLD,
            "rec_confidence": t.REC_CONFIDENCE,
            "word_spotting": t.WORD_SPOTTING,
            "distributed": distributed,
            "vocabulary": build_vocabulary(cfg),
            "output_dir": output_dir if output_dir is not None
            else os.path.join(cfg.OUTPUT_DIR, "inference", dataset_name),
        }

    def reset(self):
        self._predictions = []

    def process(self, inputs, outputs):
        for inp, out in zip(inputs, outputs):
            instances = out["instances"].to("cpu")
            self._predictions.append(neutral.from_instances(inp["image_id"], instances, self._keep_rec_prob))

    def _load_gt(self):
        if self._gt_zip:
            return load_gt_zip(self._gt_zip), self._gt_zip
        files = gt_files_from_dataset_dicts(DatasetCatalog.get(self._dataset_name), self._voc_size,
                                            self._vocabulary)
        if self._output_dir:
            write_zip(os.path.join(self._output_dir, "gt_derived.zip"), files)
        return parse_files(files, f"{self._dataset_name} (derived GT)"), f"GT derived from {self._dataset_name}"

    def evaluate(self):
        if self._distributed:
            comm.synchronize()
            gathered = comm.gather(self._predictions, dst=0)
            if not comm.is_main_process():
                return {}
            predictions = list(itertools.chain(*gathered))
        else:
            predictions = self._predictions
        if not predictions:
            logger.warning("TextSpottingEvaluator received no predictions for %s.", self._dataset_name)
            return {}
        if self._output_dir:
            os.makedirs(self._output_dir, exist_ok=True)
        gt, gt_name = self._load_gt()
        if len(gt) != len({p.image_id for p in predictions}):
            logger.warning(
                "%s has %d samples but predictions cover %d images: every GT sample is scored (official rule).",
                gt_name, len(gt), len({p.image_id for p in predictions}),
            )
        if self._output_dir:
            neutral.write_json(os.path.join(self._output_dir, "text_predictions.json"), self._protocol, predictions)
        results = run_evaluation(
            predictions, gt, self._runs, self._lexicon_root, self._voc_size, self._output_dir, gt_name,
            vocabulary=self._vocabulary,
        )
        for run in self._runs:
            logger.info("Evaluation of %s with %s\n%s", self._dataset_name, run.describe(),
                        create_small_table(results[run.run_name]))
        if self._output_dir:
            report = {
                "dataset": self._dataset_name,
                "gt": gt_name,
                "runs": [{"settings": asdict(run), "metrics": results[run.run_name]} for run in self._runs],
            }
            with open(os.path.join(self._output_dir, "text_results.json"), "w") as f:
                json.dump(report, f, indent=1)
        return OrderedDict(results)
