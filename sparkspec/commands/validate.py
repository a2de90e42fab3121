"""`sparkspec validate FILE...`: validate the specs that changed files belong to, as the
pre-commit hook `sparkspec-validate` calls it (with the staged spec files and templates).

A spec file stands for itself; any other file (a prompt template, an include) belongs to the
nearest `project.spark.yaml` in its folder or above. Every spec is validated, every problem
reported, and the result is one exit status.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from pathlib import Path

from sparkspec.config.loader import LoadOptions
from sparkspec.errors import SpecError
from sparkspec.state.workspace import open_workspace

SPEC_SUFFIXES = (".spark.yaml", ".spark.yml")


def specs_for(files: Iterable[str], spec_name: str) -> list[Path]:
    """The specs, in first-seen order, that these files belong to (files of no project are left out)."""
    found: dict[Path, None] = {}
    for name in files:
        path = Path(name)
        if path.name.endswith(SPEC_SUFFIXES):
            found[path] = None
            continue
        for folder in path.absolute().parents:
            candidate = folder / spec_name
            if candidate.is_file():
                found[Path(os.path.relpath(candidate))] = None
                break
    return list(found)


def validate_files(files: Iterable[str], spec_name: str, options: LoadOptions,
                   echo: Callable[[str], None]) -> bool:
    """Validate each spec; print its warnings and errors (and a line for each valid one)."""
    ok = True
    for spec in specs_for(files, spec_name):
        try:
            workspace = open_workspace(spec, options, display=str(spec))
        except SpecError as exc:
            ok = False
            for diagnostic in sorted(exc.diagnostics, key=lambda d: (d.file, d.line, d.column)):
                echo(str(diagnostic))
            continue
        for warning in sorted(workspace.warnings, key=lambda d: (d.file, d.line, d.column)):
            echo(str(warning))
        workspace.close()
        echo(f"{spec}: valid")
    return ok
