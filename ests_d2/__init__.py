"""ESTextSpotter as a detectron2 project."""
