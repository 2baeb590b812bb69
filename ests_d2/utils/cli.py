"""How the command-line tools in ``tools/`` report a failure: one line on stderr, ``<prog>: error: <message>``
(the form argparse uses for a wrong command line), and a non-zero exit status; the traceback only with --debug.

The standard library only: evaluate_predictions and demo_report import this before they parse their command line,
and must answer --help (and evaluate_predictions score) without importing torch.
"""
import sys
from typing import Callable, Mapping, Tuple, Type, Union

# The errors a user causes and can fix (a bad option value, a missing or malformed file); the project raises
# them with messages written for the user, so they are printed as they are.
INPUT_ERRORS = (ValueError, OSError)
# detectron2's config loading (yacs under it) asserts: a missing --config-file, an unknown key or odd list in --opts
CONFIG_ERRORS = (AssertionError,)
EXIT_FAILURE = 1  # an error no tool listed: most likely a bug, reported with its type
EXIT_INTERRUPTED = 130  # Ctrl-C: 128 + SIGINT, what a shell reports for a command the signal killed
DEBUG_HINT = "(--debug shows the traceback)"

ErrorTypes = Union[Type[BaseException], Tuple[Type[BaseException], ...]]


def _one_line(error: BaseException) -> str:
    # str(KeyError("x")) is "'x'", the key's repr: a KeyError raised with a message shows the message.
    keyed = isinstance(error, KeyError) and len(error.args) == 1 and isinstance(error.args[0], str)
    return " ".join((error.args[0] if keyed else str(error)).split())


def error_message(error: BaseException) -> str:
    """The exception's text on one line (whitespace collapsed), or its type name if it has none."""
    return _one_line(error) or type(error).__name__


def print_error(prog: str, message: str) -> None:
    """``<prog>: error: <message>`` on stderr, as argparse's ``parser.error`` prints it."""
    print(f"{prog}: error: {message}", file=sys.stderr)


def run_cli(prog: str, action: Callable[[], object], *, debug: bool, user_errors: Mapping[ErrorTypes, int]) -> int:
    """Run ``action()`` and return the tool's exit status: 0 when it returns, else the status of its error.

    Args:
        prog: the tool's name as argparse shows it (its file name, e.g. ``demo.py``).
        action: the tool's work; what it returns is ignored.
        debug: the tool's --debug flag: re-raise instead, for the full traceback.
        user_errors: exception class (or tuple of classes) -> exit status, the first matching entry wins (list a
            subclass before its base). These print their message alone. Any other ``Exception`` prints its type,
            its message and a hint at --debug, and exits ``EXIT_FAILURE``: that is a bug to report, not a mistake
            to fix. Ctrl-C prints ``<prog>: interrupted`` and exits ``EXIT_INTERRUPTED``.

    The tool calls ``sys.exit(main())`` with this status, so that tests can call ``main`` and check it.
    """
    try:
        action()
    except KeyboardInterrupt:
        if debug:
            raise
        print(f"{prog}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as error:  # noqa: B902 - every error becomes one line; --debug re-raises it
        if debug:
            raise
        for types, status in user_errors.items():
            if isinstance(error, types):
                print_error(prog, error_message(error))
                return status
        text = _one_line(error)
        print_error(prog, f"{type(error).__name__}{': ' + text if text else ''} {DEBUG_HINT}")
        return EXIT_FAILURE
    return 0
