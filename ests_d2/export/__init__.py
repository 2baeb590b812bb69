"""Deployment of a trained spotter: ONNX export (``onnx_export``, ``network``, ``ops``; need torch) and an
ONNX Runtime spotter (``runtime``; needs only numpy, Pillow and onnxruntime, no torch or detectron2).

Import the submodule you need: this package imports nothing itself, so that ``runtime`` works without torch.
"""
