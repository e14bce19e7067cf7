"""How a `towervision` command fails: one line on stderr and exit status 2 for the errors a user can act on, never a
traceback. Every command's `main` is wrapped by `exits_on_error` (or calls `report_error` itself)."""

import functools
import sys


# What a command reports in one line with exit status 2: bad input (our checks raise `ValueError` naming the file, row
# or field), a missing file, the network or the Hub (`OSError`), a missing optional extra (`ImportError`).
COMMAND_ERRORS = (ValueError, OSError, ImportError)


def report_error(prog: str, error: BaseException) -> int:
    """Print `PROG: error: MESSAGE` (one line) on stderr for one of `COMMAND_ERRORS`; return the exit status, 2."""
    message = " ".join(str(error).split()) or type(error).__name__
    if isinstance(error, ModuleNotFoundError):
        message += " (an optional dependency is missing: install the extra that provides it)"
    print(f"{prog}: error: {message}", file=sys.stderr)
    return 2


def exits_on_error(prog: str):
    """Decorate a command's `main`: `COMMAND_ERRORS` end it with `report_error`'s line and exit status 2 instead of a
    traceback."""

    def decorate(main):
        @functools.wraps(main)
        def wrapper(*args, **kwargs):
            try:
                return main(*args, **kwargs)
            except COMMAND_ERRORS as error:
                return report_error(prog, error)

        return wrapper

    return decorate
