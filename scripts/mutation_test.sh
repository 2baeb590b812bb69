#!/usr/bin/env bash
# Mutation testing on demand (NOT run in CI): change the code where a silent bug costs most, one small edit
# at a time (mutmut 3), and check that a fast, targeted selection of tests fails for each edit.
# docs/MUTATION.md explains the targets, how to read the results and lists the surviving mutants.
#
#   scripts/mutation_test.sh targets postprocess      # some targets
#   scripts/mutation_test.sh all                      # every target (an hour or more on 2 CPU cores)
#   scripts/mutation_test.sh --tests-from REF oom     # the same mutants against the tests of git REF
#   scripts/mutation_test.sh --survivors [--tests-from REF] oom
#                                                     # re-run only the mutants an earlier run of that copy
#                                                     # left alive, against the working tree's tests
#   scripts/mutation_test.sh --list                   # the targets, their code and their tests
#   MUTATION_TESTS="a.py b.py::test_x" scripts/mutation_test.sh --tests-from REF scoring
#                                                     # other tests (files or node ids) for one target, e.g.
#                                                     # an older revision's tests minus those its code outgrew
#
# Each target runs in its own scratch copy, output/mutation/<target>[@REF]/ (the repository is never
# modified); the scores go to output/mutation/summary.txt, every mutant's status to <copy>/results.txt
# (inspect one with `cd <copy> && $MUTATION_VENV/bin/python -m mutmut show NAME`).
# mutmut and its dependencies are installed on first use into their own venv, MUTATION_VENV (default
# output/mutation/venv), which sees the project venv's packages through a .pth file: the project venv is
# not touched. Environment: PYTHON (project interpreter, default .venv/bin/python), JOBS (parallel
# mutants, default 1), ESTS_SHARED_DIR (the shared reference folder, default ../shared).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${PYTHON:-$ROOT/.venv/bin/python}"
OUT="$ROOT/output/mutation"
MUTATION_VENV="${MUTATION_VENV:-$OUT/venv}"
MUTMUT_VERSION=3.8.1
JOBS="${JOBS:-1}"
export ESTS_SHARED_DIR="${ESTS_SHARED_DIR:-$(cd "$ROOT/.." && pwd)/shared}"
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"  # one thread per forked mutant: no oversubscription

die() { echo "mutation_test.sh: ERROR: $*" >&2; exit 1; }

# target -> "module to mutate|mutant name globs (empty: all its functions)|test files"
declare -A TARGETS=(
  [targets]="ests_d2/modeling/meta_arch.py|ests_d2.modeling.meta_arch.xǁESTSǁofficial_targets* ests_d2.modeling.meta_arch.xǁESTSǁinference*|tests/modeling/test_meta_arch.py tests/modeling/test_meta_arch_geometry.py"
  [postprocess]="ests_d2/modeling/postprocess.py|ests_d2.modeling.postprocess.xǁESTSPostProcessǁforward* ests_d2.modeling.postprocess.x_result_to_instances*|tests/modeling/test_postprocess.py tests/modeling/test_postprocess_limits.py tests/modeling/test_meta_arch_geometry.py"
  [matcher]="ests_d2/modeling/matcher.py||tests/modeling/test_matcher.py"
  [criterion]="ests_d2/modeling/criterion.py|ests_d2.modeling.criterion.xǁESTSCriterionǁloss_labels* ests_d2.modeling.criterion.xǁESTSCriterionǁloss_boxes* ests_d2.modeling.criterion.xǁESTSCriterionǁloss_text*|tests/modeling/test_criterion.py tests/modeling/test_criterion_edges.py"
  [mapper]="ests_d2/data/dataset_mapper.py|ests_d2.data.dataset_mapper.xǁTextSpottingDatasetMapperǁannotations_to_instances* ests_d2.data.dataset_mapper.x__kept_by_crops*|tests/data/test_text_mapper.py tests/data/test_crop_rotation_property.py tests/data/test_mapper_instances.py"
  [scoring]="ests_d2/evaluation/scoring.py||tests/evaluation/test_eval_rules.py tests/evaluation/test_eval_geometry_format.py tests/evaluation/test_eval_evaluator.py tests/evaluation/test_eval_shared_data.py tests/evaluation/test_eval_script_protocols.py tests/evaluation/test_eval_scoring_edges.py"
  [checkpoint]="ests_d2/engine/checkpoint.py|ests_d2.engine.checkpoint.x_find_resume_checkpoint* ests_d2.engine.checkpoint.x__newest_loadable_checkpoint* ests_d2.engine.checkpoint.x__training_checkpoint_iteration* ests_d2.engine.checkpoint.xǁPeriodicCheckpointerǁsave_now* ests_d2.engine.checkpoint.x_restore_rng_state* ests_d2.engine.checkpoint.xǁAtomicDetectionCheckpointerǁremove_stale_temp_files*|tests/engine/test_engine_units.py tests/engine/test_checkpoint_files.py"
  [oom]="ests_d2/engine/oom.py|ests_d2.engine.oom.x_shrink_batch* ests_d2.engine.oom.x__rescale_instances*|tests/engine/test_engine_units.py tests/engine/test_oom_shrink_geometry.py"
)
ORDER=(targets postprocess matcher criterion mapper scoring checkpoint oom)

usage() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print } /^set / { exit }' "${BASH_SOURCE[0]}"; }

TESTS_FROM=""
SURVIVORS=""
SELECTED=()
while [ $# -gt 0 ]; do
  case "$1" in
    --tests-from) [ $# -ge 2 ] || die "--tests-from needs a git revision"; TESTS_FROM="$2"; shift 2 ;;
    --survivors) SURVIVORS=1; shift ;;
    --list) for t in "${ORDER[@]}"; do IFS='|' read -r m g f <<<"${TARGETS[$t]}"; echo "$t: $m ${g:+[$g]} <- $f"; done; exit 0 ;;
    -h|--help) usage; exit 0 ;;
    all) SELECTED+=("${ORDER[@]}"); shift ;;
    *) [ -n "${TARGETS[$1]+x}" ] || die "unknown target '$1' (see --list)"; SELECTED+=("$1"); shift ;;
  esac
done
[ ${#SELECTED[@]} -gt 0 ] || { usage; exit 2; }
[ -x "$PYTHON" ] || die "no project interpreter at $PYTHON (run 'make setup' or set PYTHON)"
[ -d "$ESTS_SHARED_DIR" ] || echo "mutation_test.sh: note: $ESTS_SHARED_DIR is absent; tests that need it skip" >&2
if [ -n "$TESTS_FROM" ]; then
  git -C "$ROOT" rev-parse --verify --quiet "$TESTS_FROM^{commit}" >/dev/null || die "unknown git revision '$TESTS_FROM'"
fi

# mutmut in its own venv that also sees the project venv's packages (torch, detectron2, pytest).
if ! "$MUTATION_VENV/bin/python" -c "import mutmut" 2>/dev/null; then
  echo "==> installing mutmut $MUTMUT_VERSION into $MUTATION_VENV"
  "$PYTHON" -m venv --without-pip "$MUTATION_VENV"
  purelib="$("$MUTATION_VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_path("purelib"))')"
  "$PYTHON" -c 'import site; print("\n".join(f"import site; site.addsitedir({p!r})" for p in site.getsitepackages()))' \
    >"$purelib/project_venv.pth"
  "$MUTATION_VENV/bin/python" -m pip -qq --disable-pip-version-check install "mutmut==$MUTMUT_VERSION" \
    || die "pip could not install mutmut==$MUTMUT_VERSION"
fi

# A scratch copy: the code, and the tests of the working tree or of git revision $TESTS_FROM.
make_copy() {
  local copy="$1"
  rm -rf "$copy"; mkdir -p "$copy"
  (cd "$ROOT" && tar --exclude=__pycache__ -cf - ests_d2 configs datasets/icdar2015_samples tools pytest.ini) | tar -xf - -C "$copy"
  if [ -n "$TESTS_FROM" ]; then
    git -C "$ROOT" archive "$TESTS_FROM" tests | tar -xf - -C "$copy"
  else
    (cd "$ROOT" && tar --exclude=__pycache__ -cf - tests) | tar -xf - -C "$copy"
  fi
}

run_target() {
  local target="$1" module globs tests copy selection=() test
  IFS='|' read -r module globs tests <<<"${TARGETS[$target]}"
  tests="${MUTATION_TESTS:-$tests}"
  copy="$OUT/$target${TESTS_FROM:+@$TESTS_FROM}"
  local names="$globs" label="$target${TESTS_FROM:+ (tests of $TESTS_FROM)}"
  if [ -n "$SURVIVORS" ]; then
    # the mutants stay as generated; only the tests become the working tree's
    [ -f "$copy/results.txt" ] || die "$target: no earlier run in $copy to take the survivors of"
    names="$(grep -v ': killed$' "$copy/results.txt" | cut -d: -f1 | tr '\n' ' ')"
    cp "$copy/results.txt" "$copy/results.previous.txt"
    [ -n "${names// /}" ] || { echo "$label: no survivors to re-run"; return; }
    rm -rf "$copy/tests" && (cd "$ROOT" && tar --exclude=__pycache__ -cf - tests) | tar -xf - -C "$copy"
    label="$target (survivors of ${copy##*/} re-run with the working tree's tests)"
  else
    make_copy "$copy"
  fi
  for test in $tests; do [ -f "$copy/${test%%::*}" ] && selection+=("$test"); done
  [ ${#selection[@]} -gt 0 ] || die "$target: none of $tests exists in $copy"
  # mutmut 3 leaves decorated functions alone; @torch.no_grad() only stops autograd recording, so the scratch
  # copy drops it (mutmut's clean run of the selected tests checks that they still pass without it).
  sed -i 's/^\( *\)@torch\.no_grad()$/\1# @torch.no_grad() (dropped for mutmut)/' "$copy/$module"
  {
    echo "[mutmut]"
    echo "source_paths=ests_d2/"
    echo "only_mutate=$module"
    echo "also_copy="; printf '    %s\n' pytest.ini configs/ datasets/ tools/
    echo "pytest_add_cli_args_test_selection="; printf '    %s\n' "${selection[@]}"
    echo "pytest_add_cli_args="; printf '    %s\n' -p no:cacheprovider -q
    echo "process_isolation=forkserver"  # torch is not fork-safe once its thread pools run
    echo "use_git_change_detection=false"
  } >"$copy/setup.cfg"
  echo "==> $label: mutating $module ${globs:+($globs) }against ${selection[*]}"
  # shellcheck disable=SC2086  # the globs / names are separate mutant-name patterns
  (cd "$copy" && "$MUTATION_VENV/bin/python" -m mutmut run --max-children "$JOBS" $names >"$copy/run.log" 2>&1) \
    || die "$target: mutmut failed, see $copy/run.log"
  local prefixes="" glob
  for glob in $globs; do prefixes+="${prefixes:+|}${glob%\*}"; done
  # only the mutants this target asked for (the module's other functions are listed as not checked)
  (cd "$copy" && "$MUTATION_VENV/bin/python" -m mutmut results --all true) \
    | grep -E "^ *(${prefixes:-.})" | sed 's/^ *//' >"$copy/results.txt" || true
  if [ -n "$SURVIVORS" ]; then
    # mutmut marks the mutants it did not re-run "not checked": they keep their earlier status
    awk -F': ' -v names=" $names " 'NR == FNR { now[$1] = $2; next }
      { print $1 ": " (index(names, " " $1 " ") ? now[$1] : $2) }' \
      "$copy/results.txt" "$copy/results.previous.txt" >"$copy/results.merged.txt"
    mv "$copy/results.merged.txt" "$copy/results.txt"
  fi
  local total killed
  total=$(grep -c ': ' "$copy/results.txt" || true)
  killed=$(grep -c ': killed$' "$copy/results.txt" || true)
  local line="$label: $killed/$total killed"
  echo "$line" | tee -a "$OUT/summary.txt"
  grep -v ': killed$' "$copy/results.txt" || true
}

mkdir -p "$OUT"
for target in "${SELECTED[@]}"; do run_target "$target"; done
