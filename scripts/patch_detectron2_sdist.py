"""Prepare the pb1-detectron2==0.6 sdist so that it builds and runs on Python 3.11, numpy 2, Pillow >= 10.

The sdist holds upstream detectron2 v0.6's Python sources without the C++ extension. We
  1. add a tiny extension of our own (setup.py insists on compiling ``detectron2._C``; the three
     functions are what ``collect_env`` asks of it),
  2. move the model-zoo configs to where setup.py packages them from,
  3. replace APIs that numpy 2 / Pillow 10 / setuptools >= 82 removed.
Every edit is checked: a different sdist fails loudly instead of building something half-patched.

Usage: python scripts/patch_detectron2_sdist.py path/to/pb1-detectron2-0.6
"""
import pathlib
import re
import sys

PLACEHOLDER_EXTENSION = r"""// Placeholder for detectron2._C, written by ests-d2: the project needs no custom op.
#include <pybind11/pybind11.h>
#include <string>

static std::string compiler_version() {
#if defined(__GNUC__)
  return "GCC " + std::to_string(__GNUC__) + "." + std::to_string(__GNUC_MINOR__);
#else
  return "unknown";
#endif
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("get_compiler_version", &compiler_version);
  m.def("get_cuda_version", []() { return std::string("not available"); });
  m.def("has_cuda", []() { return false; });
}
"""

# numpy removed these aliases of Python builtins in 1.24.
NUMPY_ALIAS = re.compile(r"\bnp\.(int|float|bool|str|object)\b(?![\w.])")
LITERAL_EDITS = [
    ("Image.LINEAR", "Image.BILINEAR"),  # removed in Pillow 10
    ("np.array(mask, copy=False)", "np.asarray(mask)"),  # numpy 2 copy semantics
    ("torch.meshgrid(shifts_y, shifts_x)", 'torch.meshgrid(shifts_y, shifts_x, indexing="ij")'),
]
EXPECTED_EDITED_FILES = 10


def main(src: pathlib.Path) -> None:
    package = src / "detectron2"
    if not (package / "__init__.py").is_file():
        sys.exit(f"{src} is not an unpacked detectron2 sdist (no detectron2/__init__.py)")

    csrc = package / "layers" / "csrc"
    csrc.mkdir(parents=True, exist_ok=True)
    (csrc / "vision.cpp").write_text(PLACEHOLDER_EXTENSION)

    zoo_configs = package / "model_zoo" / "configs"
    if zoo_configs.is_dir():
        zoo_configs.rename(src / "configs")
    elif not (src / "configs").is_dir():
        sys.exit("model-zoo configs not found in the sdist")

    edited = 0
    for path in sorted(list(package.rglob("*.py")) + list((src / "projects").rglob("*.py"))):
        before = path.read_text()
        after = NUMPY_ALIAS.sub(lambda m: m.group(1), before)
        for old, new in LITERAL_EDITS:
            after = after.replace(old, new)
        if after != before:
            path.write_text(after)
            edited += 1

    model_zoo = package / "model_zoo" / "model_zoo.py"
    text = model_zoo.read_text()
    text = text.replace("import pkg_resources\n", "").replace(
        'pkg_resources.resource_filename(\n        "detectron2.model_zoo", os.path.join("configs", config_path)\n    )',
        'os.path.join(os.path.dirname(os.path.abspath(__file__)), "configs", config_path)',
    )
    if "pkg_resources" in text:
        sys.exit("model_zoo.py: the pkg_resources edit did not apply")
    model_zoo.write_text(text)

    # A second run finds nothing left to edit; only a fresh sdist must match the count exactly.
    if edited not in (EXPECTED_EDITED_FILES, 0):
        sys.exit(f"expected {EXPECTED_EDITED_FILES} edited files, edited {edited}: unexpected sdist")
    print(f"patched detectron2 sdist: {edited} files edited, model_zoo.py without pkg_resources")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    main(pathlib.Path(sys.argv[1]))
