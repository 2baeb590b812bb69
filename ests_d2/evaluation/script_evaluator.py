"""``ScriptTextEvaluator``: the detectron2 evaluator for the non-Latin protocols of ``script_protocols``.

Kept apart from the protocols themselves so that scoring imports no torch or detectron2.
"""
import itertools
import json
import logging
import os
from typing import List, Optional

from detectron2.config import configurable
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.evaluation import DatasetEvaluator
from detectron2.utils import comm

from ests_d2.structures import CharVocabulary, build_vocabulary

from . import predictions as neutral
from .gt_zip import gt_files_from_dataset_dicts
from .pipeline import load_gt_zip, parse_files
from .script_protocols import SCRIPT_PROTOCOLS, evaluate_script_protocol

logger = logging.getLogger(__name__)


class ScriptTextEvaluator(DatasetEvaluator):
    """detectron2 evaluator for datasets whose ``eval_protocol`` is one of ``SCRIPT_PROTOCOLS``.

    GT: the dataset's ``eval_gt_zip`` if set, otherwise derived from its dicts (texts decoded with the model's
    vocabulary, so VinText ids come back as composed Vietnamese). Writes ``text_predictions.json``, the run
    zips and ``text_results.json`` into ``output_dir``.
    """

    @configurable
    def __init__(self, dataset_name: str, *, vocabulary: CharVocabulary, tasks=("det", "e2e"),
                 det_threshold: float = -1, rec_confidence: float = -1, word_spotting: int = -1,
                 distributed: bool = True, output_dir: Optional[str] = None):
        meta = MetadataCatalog.get(dataset_name)
        self._dataset_name, self._protocol = dataset_name, meta.get("eval_protocol")
        if self._protocol not in SCRIPT_PROTOCOLS:
            raise ValueError(f"dataset '{dataset_name}': eval_protocol {self._protocol!r} is not one of "
                             f"{sorted(SCRIPT_PROTOCOLS)}")
        self._gt_zip = meta.get("eval_gt_zip", "")
        self._vocabulary = vocabulary
        self._options = dict(tasks=tuple(tasks), det_threshold=det_threshold, rec_confidence=rec_confidence,
                             word_spotting=word_spotting)
        self._distributed, self._output_dir = distributed, output_dir
        self._predictions: List[neutral.ImagePrediction] = []

    @classmethod
    def from_config(cls, cfg, dataset_name, distributed=True, output_dir=None):
        t = cfg.TEST.TEXT
        return {"dataset_name": dataset_name, "vocabulary": build_vocabulary(cfg), "tasks": list(t.TASKS),
                "det_threshold": t.DET_THRESHOLD, "rec_confidence": t.REC_CONFIDENCE,
                "word_spotting": t.WORD_SPOTTING, "distributed": distributed,
                "output_dir": output_dir or os.path.join(cfg.OUTPUT_DIR, "inference", dataset_name)}

    def reset(self):
        self._predictions = []

    def process(self, inputs, outputs):
        for inp, out in zip(inputs, outputs):
            instances = out["instances"].to("cpu")
            self._predictions.append(neutral.from_instances(inp["image_id"], instances, keep_rec_prob=False))

    def _load_gt(self):
        if self._gt_zip:
            return load_gt_zip(self._gt_zip)
        files = gt_files_from_dataset_dicts(DatasetCatalog.get(self._dataset_name), self._vocabulary.num_classes,
                                            self._vocabulary)
        return parse_files(files, f"{self._dataset_name} (derived GT)")

    def evaluate(self):
        predictions = self._predictions
        if self._distributed:
            comm.synchronize()
            gathered = comm.gather(predictions, dst=0)
            if not comm.is_main_process():
                return {}
            predictions = list(itertools.chain(*gathered))
        if self._output_dir:
            os.makedirs(self._output_dir, exist_ok=True)
            neutral.write_json(os.path.join(self._output_dir, "text_predictions.json"), self._dataset_name,
                               predictions)
        gt = self._load_gt()
        if not any(gt.values()):
            logger.warning("%s has no GT instances (e.g. a test split without public labels): predictions "
                           "written, nothing scored.", self._dataset_name)
            return {}
        results = evaluate_script_protocol(predictions, gt, self._protocol, output_dir=self._output_dir,
                                           **self._options)
        if self._output_dir:
            with open(os.path.join(self._output_dir, "text_results.json"), "w", encoding="utf-8") as f:
                json.dump({"dataset": self._dataset_name, "protocol": self._protocol, "results": results}, f, indent=1)
        return results
