"""The one user-error type and the one handler every entry point uses.

A :class:`UserError` is bad input the user can fix (a config key, a missing file, an
unknown language, a run dir in the way): the entry scripts print it as one
``error: <message>`` line and exit with :data:`EXIT_USER_ERROR`, without a traceback.
Anything else is a bug or an environment failure and still raises with its traceback.
Each module keeps its own error class (ConfigError, DataError, ...) subclassing this one
and its old ValueError/RuntimeError base, so existing ``except ValueError`` code still works.
"""
from __future__ import annotations

import functools
import sys
from typing import Callable

EXIT_USER_ERROR = 2  # argparse's own exit code for a bad command line


class UserError(Exception):
    """Bad input, reported as one ``error:`` line and exit code 2 by :func:`run_cli`."""


def run_cli(main: Callable[..., int]) -> Callable[..., int]:
    """Decorate an entry point's ``main(argv)``: a :class:`UserError` anywhere inside
    becomes ``error: <message>`` on stderr and exit code 2; every other exception
    (and KeyboardInterrupt, which the entry points turn into EXIT_INTERRUPTED) passes."""

    @functools.wraps(main)
    def wrapper(*args, **kwargs) -> int:
        try:
            return main(*args, **kwargs)
        except UserError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return EXIT_USER_ERROR

    return wrapper
