"""Shared command-line conventions: invalid input is exit 2 with one line per problem, no traceback."""

from __future__ import annotations

import sys
from collections.abc import Callable

from tasks.settings import SettingsError

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_INVALID = 2


class InputError(Exception):
    """Bad user input other than settings (a missing file, an unparsable YAML): exit 2."""


def run_cli(main: Callable[[], int]) -> None:
    """Run ``main`` and exit with its code; settings/input problems exit 2 with a clear message."""
    try:
        code = main()
    except SettingsError as err:
        for line in err.problems:
            print(f"error: {line}", file=sys.stderr)
        code = EXIT_INVALID
    except InputError as err:
        print(f"error: {err}", file=sys.stderr)
        code = EXIT_INVALID
    sys.exit(code)
