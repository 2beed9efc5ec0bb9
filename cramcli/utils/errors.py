"""The one exception type people see: a readable message and an exit code, never a traceback."""

from __future__ import annotations


class CramError(Exception):
    """A problem the user can fix. `lines` are printed one per line; `exit_code` follows the CLI convention:
    2 for bad input or usage, 1 for a failure at run time."""

    def __init__(self, *lines: str, exit_code: int = 2) -> None:
        super().__init__("\n".join(lines))
        self.lines = [line for line in lines if line]
        self.exit_code = exit_code


class UsageError(CramError):
    """Bad input, flags or files (exit code 2)."""

    def __init__(self, *lines: str) -> None:
        super().__init__(*lines, exit_code=2)


class RunError(CramError):
    """A failure while doing the work (exit code 1)."""

    def __init__(self, *lines: str) -> None:
        super().__init__(*lines, exit_code=1)
