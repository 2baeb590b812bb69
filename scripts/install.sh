#!/usr/bin/env bash
# Sets up a virtual environment for ests-d2: torch, detectron2 (unless one is already importable),
# then this project in editable mode. Idempotent: a second run on a ready machine takes seconds.
#
#   VENV=.venv bash scripts/install.sh          # default venv location
#   ESTS_USE_CURRENT_PYTHON=1 bash scripts/install.sh   # install into the active interpreter instead
#   WHEELHOUSE=DIR bash scripts/install.sh      # offline: install only from DIR (made by scripts/wheelhouse.sh)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${VENV:-$ROOT/.venv}"
BUILD="${BUILD:-$ROOT/build/detectron2}"
PYTHON="${PYTHON:-python3}"
TORCH_SPEC="${TORCH_SPEC:-torch==2.14.1 torchvision==0.29.1}"
# sha256 of the PyPI sdist pb1-detectron2==0.6 (upstream v0.6 Python sources, no C++ files)
D2_SDIST_SHA256=5d2e9e51e523ec72f6a31cca04b0a515492e9514b773a3d134cedc0677170b29

die() { echo "install.sh: ERROR: $*" >&2; exit 1; }
step() { echo "==> $*"; }

if [ "${ESTS_USE_CURRENT_PYTHON:-0}" = 1 ]; then
  PY="$(command -v "$PYTHON")"
else
  if [ ! -x "$VENV/bin/python" ]; then
    step "creating virtual environment $VENV"
    "$PYTHON" -m venv "$VENV" || die "could not create a virtual environment with $PYTHON"
  fi
  PY="$VENV/bin/python"
fi
# -qq: this machine's pip config prints a warning per missing local index otherwise; errors still show.
PIP=("$PY" -m pip -qq --disable-pip-version-check)
INSTALL=("${PIP[@]}" install)
WHEELHOUSE="${WHEELHOUSE:-}"
if [ -n "$WHEELHOUSE" ]; then
  [ -f "$WHEELHOUSE/pb1-detectron2-0.6.tar.gz" ] || die "WHEELHOUSE=$WHEELHOUSE holds no pb1-detectron2-0.6.tar.gz"
  # No index at all; sdists (fvcore, antlr4) build with the environment's own setuptools, since an offline
  # wheelhouse that leaves out what the target has cannot feed pip's isolated build environments.
  INSTALL+=(--no-index --find-links "$(cd "$WHEELHOUSE" && pwd)" --no-build-isolation)
  "${INSTALL[@]}" setuptools wheel || die "setuptools and wheel are neither installed nor in $WHEELHOUSE"
fi

# Which of our requirements import already? One interpreter start, since importing torch costs seconds.
probe() { "$PY" - <<'PYEOF' 2>/dev/null
import importlib, warnings
warnings.simplefilter("ignore")
for name in ("torch", "torchvision", "detectron2.engine", "ests_d2"):
    try:
        importlib.import_module(name)
        print(name)
    except Exception:
        pass
PYEOF
}
PRESENT=" $(probe | tr '\n' ' ')"
have() { for m in "$@"; do case "$PRESENT" in *" $m "*) ;; *) return 1 ;; esac; done; }

# 1. torch (detectron2's setup.py imports it, so it comes first)
if have torch torchvision; then
  step "torch already installed"
else
  step "installing $TORCH_SPEC"
  # shellcheck disable=SC2086
  "${INSTALL[@]}" $TORCH_SPEC wheel || die "pip could not install $TORCH_SPEC"
fi

# 2. detectron2: keep any importable one (GPU users build theirs from source)
if have detectron2.engine; then
  step "detectron2 already importable -- skipping its build"
else
  step "building detectron2 0.6 from the PyPI sdist pb1-detectron2==0.6"
  rm -rf "$BUILD"; mkdir -p "$BUILD"
  if [ -n "$WHEELHOUSE" ]; then
    cp "$WHEELHOUSE/pb1-detectron2-0.6.tar.gz" "$BUILD/"
  else
    "${PIP[@]}" download --no-deps --no-binary=:all: -d "$BUILD" "pb1-detectron2==0.6" \
      || die "could not download pb1-detectron2==0.6 from PyPI"
  fi
  echo "$D2_SDIST_SHA256  $BUILD/pb1-detectron2-0.6.tar.gz" | sha256sum -c --quiet - \
    || die "sha256 of pb1-detectron2-0.6.tar.gz does not match: refusing to build it"
  tar -xzf "$BUILD/pb1-detectron2-0.6.tar.gz" -C "$BUILD"
  "$PY" "$ROOT/scripts/patch_detectron2_sdist.py" "$BUILD/pb1-detectron2-0.6" \
    || die "the detectron2 source edit did not apply (unexpected sdist contents?)"
  "${INSTALL[@]}" wheel
  "${INSTALL[@]}" --no-build-isolation "$BUILD/pb1-detectron2-0.6" \
    || die "building detectron2 failed (needs g++ and the Python headers)"
  "$PY" -W ignore -c "import detectron2.engine" || die "detectron2 was built but does not import"
fi

# 3. this project (editable) with its pure-Python dependencies; skipped when setup.py is unchanged
STAMP="$("$PY" -c 'import sys; print(sys.prefix)')/.ests-d2-installed"
SETUP_SHA="$(sha256sum "$ROOT/setup.py" | cut -d' ' -f1) $ROOT"
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$SETUP_SHA" ] && have ests_d2; then
  step "ests-d2 already installed from $ROOT"
else
  step "installing ests-d2 (editable)"
  "${INSTALL[@]}" -e "$ROOT[test,export]" || die "pip could not install the project"
  "$PY" -W ignore -c "import ests_d2, detectron2.engine" || die "ests_d2 does not import after install"
  echo "$SETUP_SHA" > "$STAMP"
fi
step "ready: $PY"
