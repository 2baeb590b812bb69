#!/usr/bin/env bash
# Collects into DIR, on a machine with internet, everything scripts/install.sh needs besides torch and
# torchvision, for a Linux x86-64 machine without internet (a cluster's compute nodes, an offline GPU box):
# the detectron2 0.6 sdist and the wheels (sdists where PyPI has no wheel) of ests-d2's and detectron2's
# requirements. There, `WHEELHOUSE=DIR bash scripts/install.sh` installs from DIR alone.
#
#   PYTHON=python3.12 bash scripts/wheelhouse.sh DIR [SKIP_FILE]
#
# Run it after scripts/install.sh: pip runs detectron2's setup.py, which imports torch, even to download the
# sdist, so that download uses install.sh's environment (TORCH_PYTHON, default .venv/bin/python).
#
# PYTHON is an interpreter of the target's Python version (default python3): pip resolves the requirements by
# running it, so environment markers and wheel tags are the target's. SKIP_FILE names distributions the target
# already has, one per line (`pip list --format=freeze` there will do: versions are ignored); their files are left
# out of DIR to keep it small, and the target's own copies must then satisfy the requirements.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DIR="${1:?usage: PYTHON=python3.X bash scripts/wheelhouse.sh DIR [SKIP_FILE]}"
SKIP_FILE="${2:-}"
PYTHON="${PYTHON:-python3}"
TORCH_PYTHON="${TORCH_PYTHON:-$ROOT/.venv/bin/python}"
D2_SDIST=pb1-detectron2-0.6.tar.gz

die() { echo "wheelhouse.sh: ERROR: $*" >&2; exit 1; }
step() { echo "==> $*"; }

mkdir -p "$DIR"
DIR="$(cd "$DIR" && pwd)"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

# A throwaway venv of the target's version, so that its pip resolves for that version.
"$PYTHON" -m venv "$WORK/venv" || die "could not create a virtual environment with $PYTHON"
PIP=("$WORK/venv/bin/python" -m pip -qq --disable-pip-version-check)
step "resolving for $("$WORK/venv/bin/python" -c 'import sys; print("Python %d.%d" % sys.version_info[:2])')"

step "detectron2 sdist"
"$TORCH_PYTHON" -c "import torch" 2>/dev/null || die "$TORCH_PYTHON has no torch: run scripts/install.sh first"
"$TORCH_PYTHON" -m pip -qq --disable-pip-version-check download --no-deps --no-binary=:all: -d "$DIR" \
  "pb1-detectron2==0.6" || die "could not download pb1-detectron2==0.6"
# install.sh checks the sdist's sha256; its requirements are the egg-info's unconditional ones (up to the
# first blank line: the sections after it are extras and old-Python markers).
tar -xzOf "$DIR/$D2_SDIST" pb1-detectron2-0.6/pb1_detectron2.egg-info/requires.txt \
  | sed '/^$/q' | sed '/^$/d' > "$WORK/detectron2-requirements.txt" || die "no requires.txt in $D2_SDIST"

step "requirements of detectron2, ests-d2 (and its tests) and the build tools install.sh uses"
"${PIP[@]}" download -d "$DIR" -r "$WORK/detectron2-requirements.txt" "$ROOT[test,export]" wheel setuptools \
  || die "pip could not download the requirements"

if [ -n "$SKIP_FILE" ]; then
  # Distribution names compare normalised (PEP 503); file names use underscores for the separators.
  norm() { tr 'A-Z' 'a-z' | sed -E 's/[-_.]+/_/g'; }
  skipped=0
  while read -r name; do
    name="$(printf '%s' "${name%%[=<> ;]*}" | norm)"
    [ -n "$name" ] || continue
    for f in "$DIR"/*; do
      base="$(basename "$f" | norm)"
      case "$base" in "${name}"_[0-9]*) [ "$(basename "$f")" = "$D2_SDIST" ] || { rm -f "$f"; skipped=$((skipped + 1)); } ;; esac
    done
  done < "$SKIP_FILE"
  step "left out $skipped file(s) of distributions listed in $SKIP_FILE"
fi
step "ready: $(ls "$DIR" | wc -l) files, $(du -sh "$DIR" | cut -f1) in $DIR"
