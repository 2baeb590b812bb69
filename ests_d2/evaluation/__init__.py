"""Official-protocol text-spotting evaluation (rules: docs/EVALUATION.md).

Everything here except ``TextSpottingEvaluator`` is plain Python + numpy / shapely / rapidfuzz, so scoring
predictions (``tools/evaluate_predictions.py``) never imports torch or detectron2. The detectron2 evaluator is
loaded on first access of ``ests_d2.evaluation.TextSpottingEvaluator`` (PEP 562 module ``__getattr__``).
"""
from .lexicon import LexiconMatcher
from .gt_zip import gt_files_from_dataset_dicts, write_gt_zip
from .pipeline import RunResult, evaluate_runs, load_gt_zip, run_evaluation
from .predictions import ImagePrediction, InstancePrediction
from .protocol import EvalSettings, resolve_runs, resolve_settings
from .rrc_format import RRCFormatError
from .scoring import score

__all__ = [
    "EvalSettings",
    "ImagePrediction",
    "InstancePrediction",
    "LexiconMatcher",
    "RRCFormatError",
    "RunResult",
    "TextSpottingEvaluator",
    "evaluate_runs",
    "gt_files_from_dataset_dicts",
    "load_gt_zip",
    "resolve_runs",
    "resolve_settings",
    "run_evaluation",
    "score",
    "write_gt_zip",
]


def __getattr__(name):
    # The detectron2 evaluator pulls in torch (seconds); import it only when asked for.
    if name == "TextSpottingEvaluator":
        from .text_evaluator import TextSpottingEvaluator

        return TextSpottingEvaluator
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
