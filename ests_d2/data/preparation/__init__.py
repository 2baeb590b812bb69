"""Dataset preparation: native annotation files -> COCO-text json (Bezier-fitted), eval GT zip, summary.

``readers`` parse the native formats, ``pairing`` finds each file's image and the image ids, ``bezier_fit`` fits
the curves, ``prepare`` runs the whole set, ``writers`` writes the files, ``registry`` registers the result and ``cli``
is the command line behind ``tools/prepare_dataset.py``; the walk-through is in datasets/README.md. Import the
submodules directly: ``import ests_d2.data`` only needs the light ``registry``.
"""
