"""ESTS modeling: importing this package registers the ``ESTS`` meta-architecture with detectron2."""
from .meta_arch import ESTS

__all__ = ["ESTS"]
