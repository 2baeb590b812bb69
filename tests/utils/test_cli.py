"""ests_d2/utils/cli.py: the one-line error, exit status, --debug and Ctrl-C behaviour every tool shares."""
import subprocess
import sys
from pathlib import Path

import pytest

from ests_d2.utils.cli import DEBUG_HINT, EXIT_FAILURE, EXIT_INTERRUPTED, INPUT_ERRORS, error_message, run_cli

REPO = Path(__file__).resolve().parents[2]


class UsageError(ValueError):
    """As evaluate_predictions' own: a ValueError with a status of its own."""


def _raise(error):
    def action():
        raise error

    return action


def _run(capsys, action, debug=False, user_errors=None):
    status = run_cli("tool.py", action, debug=debug, user_errors=user_errors or {INPUT_ERRORS: 1})
    out, err = capsys.readouterr()
    return status, out, err


def test_success_runs_the_action_once_and_exits_0(capsys):
    calls = []
    status, out, err = _run(capsys, lambda: calls.append(print("done")))
    assert (status, out, err, len(calls)) == (0, "done\n", "", 1)


def test_user_error_is_one_argparse_style_line_with_its_status(capsys):
    status, out, err = _run(capsys, _raise(FileNotFoundError("preds.json does not exist")),
                            user_errors={INPUT_ERRORS: 3})
    assert (status, out, err) == (3, "", "tool.py: error: preds.json does not exist\n")


def test_first_matching_class_wins(capsys):
    codes = {UsageError: 2, INPUT_ERRORS: 1}  # UsageError is a ValueError: listed first, it takes precedence
    status, _, err = _run(capsys, _raise(UsageError("--lexicon full: no files")), user_errors=codes)
    assert (status, err) == (2, "tool.py: error: --lexicon full: no files\n")
    status, _, err = _run(capsys, _raise(ValueError("x.json: line 2")), user_errors=codes)
    assert (status, err) == (1, "tool.py: error: x.json: line 2\n")


def test_multi_line_message_becomes_one_line(capsys):
    _, _, err = _run(capsys, _raise(ValueError("  first line\n  second\tline \n")))
    assert err == "tool.py: error: first line second line\n"


def test_key_error_shows_its_message_not_its_repr(capsys):
    _, _, err = _run(capsys, _raise(KeyError("--dataset x: not a registered dataset")),
                     user_errors={(*INPUT_ERRORS, KeyError): 1})
    assert err == "tool.py: error: --dataset x: not a registered dataset\n"
    assert error_message(KeyError(3)) == "3" and error_message(KeyError()) == "KeyError"


def test_an_unlisted_error_names_its_type_and_points_at_debug(capsys):
    status, _, err = _run(capsys, lambda: 1 / 0)
    assert (status, err) == (EXIT_FAILURE, f"tool.py: error: ZeroDivisionError: division by zero {DEBUG_HINT}\n")
    status, _, err = _run(capsys, _raise(RuntimeError()))
    assert (status, err) == (EXIT_FAILURE, f"tool.py: error: RuntimeError {DEBUG_HINT}\n")


@pytest.mark.parametrize("error", [ValueError("user"), ZeroDivisionError("bug"), KeyboardInterrupt()])
def test_debug_re_raises_the_error_itself(capsys, error):
    with pytest.raises(type(error)) as raised:
        _run(capsys, _raise(error), debug=True)
    assert raised.value is error and capsys.readouterr().err == ""


def test_ctrl_c_is_one_line_and_status_130(capsys):
    status, _, err = _run(capsys, _raise(KeyboardInterrupt()))
    assert (status, err) == (EXIT_INTERRUPTED, "tool.py: interrupted\n") and EXIT_INTERRUPTED == 130


def test_sys_exit_inside_the_action_is_not_an_error(capsys):
    with pytest.raises(SystemExit) as raised:  # argparse's own exits pass through untouched
        _run(capsys, lambda: sys.exit(2))
    assert raised.value.code == 2 and capsys.readouterr().err == ""


def _heavy_modules_after(code: str) -> str:
    done = subprocess.run([sys.executable, "-c", code + "\nimport sys\nprint(sorted(m for m in sys.modules "
                           "if m.split('.')[0] in ('torch', 'torchvision', 'detectron2')))"],
                          capture_output=True, text=True, timeout=120, cwd=REPO,
                          env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr
    return done.stdout.strip().splitlines()[-1]


def test_importing_the_helper_imports_no_torch():
    assert _heavy_modules_after("import ests_d2.utils.cli") == "[]"


@pytest.mark.parametrize("tool", ["evaluate_predictions.py", "demo_report.py"])
def test_torch_free_tools_answer_help_without_torch(tool):
    code = (f"import runpy, sys\nsys.argv = [{tool!r}, '--help']\n"
            f"try:\n    runpy.run_path({str(REPO / 'tools' / tool)!r}, run_name='__main__')\n"
            "except SystemExit as e:\n    assert e.code == 0, e.code")
    assert _heavy_modules_after(code) == "[]"
