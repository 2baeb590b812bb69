"""Official-protocol text-spotting evaluation (docs: shared eval_protocol.md)."""
from .lexicon import LexiconMatcher
from .gt_zip import gt_files_from_dataset_dicts, write_gt_zip
from .pipeline import load_gt_zip, run_evaluation
from .predictions import ImagePrediction, InstancePrediction
from .protocol import EvalSettings, resolve_runs, resolve_settings
from .rrc_format import RRCFormatError
from .scoring import score
from .text_evaluator import TextSpottingEvaluator

__all__ = [
    "EvalSettings",
    "ImagePrediction",
    "InstancePrediction",
    "LexiconMatcher",
    "RRCFormatError",
    "TextSpottingEvaluator",
    "gt_files_from_dataset_dicts",
    "load_gt_zip",
    "resolve_runs",
    "resolve_settings",
    "run_evaluation",
    "score",
    "write_gt_zip",
]
