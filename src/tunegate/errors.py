"""User-facing errors: one line, naming the file and line or field, exit code 2."""

from __future__ import annotations


class UserError(Exception):
    """Bad input from the user. The CLI prints `str(err)` on one line and exits 2, no traceback."""

    exit_code = 2

    def __init__(self, message: str, *, where: str | None = None) -> None:
        self.where = where
        super().__init__(f"{where}: {message}" if where else message)
