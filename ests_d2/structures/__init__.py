"""Text structures shared by data, modeling and evaluation: the recognition vocabulary and Bezier geometry.

A leaf package: it imports nothing else from ``ests_d2``, and ``vocabulary`` / ``bezier`` import no torch (the
evaluation tool scores predictions without it). ``text_list`` and ``text_instances`` work on torch tensors and
detectron2 ``Instances``; import them from their modules.
"""
from .bezier import bernstein_weights, bezier_to_polygon, polygon_to_points, shoelace_area
from .vocabulary import EN_CHARACTERS, UNKNOWN_GLYPH, CharVocabulary, build_vocabulary, load_vocabulary

__all__ = [
    "EN_CHARACTERS",
    "UNKNOWN_GLYPH",
    "CharVocabulary",
    "bernstein_weights",
    "bezier_to_polygon",
    "build_vocabulary",
    "load_vocabulary",
    "polygon_to_points",
    "shoelace_area",
]
