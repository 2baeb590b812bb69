#!/usr/bin/env python
"""Cost of the optional image pre-check (``load_text_json(..., verify_images=True)`` / ``ESTS_VERIFY_IMAGES=1``).

Times ``image_io.image_file_problem`` (header decode + end-marker read) against a full decode
(``read_text_image``) on the real images of ``../shared/data/scene_text`` and the embedded ICDAR2015
samples, with the files in the page cache (a cold disk adds one small read per file to both).

Usage: PYTHONPATH=. python bench/bench_image_check.py [--repeats 5]
"""
import argparse
import platform
import time
from pathlib import Path

from PIL import Image

from ests_d2.data.datasets import ICDAR2015_SAMPLES_DIR
from ests_d2.data.image_io import image_file_problem, read_text_image

_REPO = Path(__file__).resolve().parents[1]
_SHARED_IMAGES = _REPO / ".." / "shared" / "data" / "scene_text" / "images"


def _per_image_ms(paths, check, repeats):
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for path in paths:
            check(path)
        best = min(best, time.perf_counter() - start)
    return 1000 * best / len(paths)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5, help="timing runs; the fastest is reported")
    args = parser.parse_args()
    paths = sorted(_SHARED_IMAGES.glob("*/*.jpg")) + sorted(ICDAR2015_SAMPLES_DIR.glob("images/*.jpg"))
    if not paths:
        raise SystemExit(f"no images found under {_SHARED_IMAGES} or {ICDAR2015_SAMPLES_DIR}")
    sizes = {p: Image.open(p).size for p in paths}

    def pre_check(path):
        assert image_file_problem(str(path), *sizes[path]) is None, path

    check_ms = _per_image_ms(paths, pre_check, args.repeats)
    decode_ms = _per_image_ms(paths, lambda p: read_text_image(str(p), "RGB"), args.repeats)
    print(f"{len(paths)} JPEG images (mostly 1280x720), {platform.processor() or platform.machine()}, "
          f"best of {args.repeats}")
    print(f"pre-check (header + end marker): {check_ms:.3f} ms / image")
    print(f"full decode (read_text_image):   {decode_ms:.3f} ms / image ({decode_ms / check_ms:.0f}x)")


if __name__ == "__main__":
    main()
