"""Diagnostics: problems found in a spec, collected and shown together."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Severity = Literal["error", "warning"]


@dataclass(frozen=True, order=True)
class Diagnostic:
    file: str
    line: int
    column: int
    severity: Severity
    path: str
    message: str

    def __str__(self) -> str:
        where = f"{self.path}: " if self.path else ""
        text = f"{self.file}:{self.line}:{self.column}: {self.severity}: {where}{self.message}"
        # One diagnostic, one line, whatever a key, a value or a library's message holds.
        return text.replace("\r", "\\r").replace("\n", "\\n")


def has_errors(diagnostics: list[Diagnostic]) -> bool:
    return any(d.severity == "error" for d in diagnostics)


def conflict_marker_line(text: str) -> int | None:
    """The line of the first git conflict marker in `text` (a file left mid-merge), if any."""
    for number, line in enumerate(text.splitlines(), start=1):
        if line.startswith(("<<<<<<< ", ">>>>>>> ", "||||||| ")) or line in ("<<<<<<<", "=======", ">>>>>>>"):
            return number
    return None
