"""`sparkspec validate`: check a spec without reading the lock, the cache or the remote.

`validate FILE...` validates the specs that changed files belong to, as the pre-commit hook
`sparkspec-validate` calls it (with the staged spec files and templates). A spec file stands
for itself; any other file (a prompt template, an include) belongs to the nearest
`project.spark.yaml` in its folder or above. Every spec is validated, every problem
reported, and the result is one exit status.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from pathlib import Path

from sparkspec.config.loader import LoadOptions, load_project
from sparkspec.config.model import Project
from sparkspec.diagnostics import Diagnostic
from sparkspec.errors import SpecError

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
                   echo: Callable[[str], None], say: Callable[[str], None] | None = None) -> bool:
    """Validate each spec; print its warnings and errors with `echo` (and a line for each valid
    one with `say`: standard output, as `validate` alone prints it). A file that does not
    exist is an error (a typo must not validate the project beside it)."""
    say = say or echo
    files = list(files)
    missing = [name for name in files if not os.path.lexists(name)]
    for name in missing:
        echo(f"error: {name}: no such file")
    ok = not missing
    for spec in specs_for([name for name in files if name not in missing], spec_name):
        try:
            loaded = load_project(spec, options, display=str(spec))
        except SpecError as exc:
            ok = False
            print_diagnostics(exc.diagnostics, echo)
            continue
        print_diagnostics(loaded.warnings, echo)
        say(f"{spec}: valid")
    return ok


def print_diagnostics(diagnostics: Iterable[Diagnostic], echo: Callable[[str], None]) -> None:
    for diagnostic in sorted(diagnostics, key=lambda d: (d.file, d.line, d.column)):
        echo(str(diagnostic))


def load_spec(spec: str, options: LoadOptions, echo: Callable[[str], None]) -> Project:
    """The spec alone, its warnings printed: validate and graph read neither the lock nor the cache."""
    loaded = load_project(Path(spec), options, display=spec)
    print_diagnostics(loaded.warnings, echo)
    return loaded.project


def validate_spec(spec: str, options: LoadOptions, echo: Callable[[str], None],
                  warn: Callable[[str], None]) -> None:
    """Raises SpecError with every problem; prints a summary line when the spec is valid."""
    project = load_spec(spec, options, warn)
    scenes = len(project.scenes)
    echo(f"{spec}: valid ({scenes} scene{'s' if scenes != 1 else ''}, "
         f"{len(project.sequences)} sequence(s)).")
