"""The two ways tests run `sparkspec`: `run_cli` as a user's shell would (a subprocess of
`python -m sparkspec`), and `run_main` / `run_here` in-process through the console entry point
(its error boundary included) where a test needs monkeypatching or is not about the process
(a subprocess costs about 0.4 s of CPU in imports alone). All capture what it prints."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from sparkspec import cli


@dataclass
class Run:
    code: int
    out: str
    err: str

    @property
    def returncode(self) -> int:
        return self.code

    @property
    def stdout(self) -> str:
        return self.out

    @property
    def stderr(self) -> str:
        return self.err

    def events(self) -> list[dict[str, Any]]:
        """`apply --json`'s events."""
        return [json.loads(line) for line in self.out.splitlines() if line.strip()]

    def rendered(self) -> list[str]:
        return sorted(e["scene"] for e in self.events() if e["event"] == "completed")


def cli_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "sparkspec", *args]


def run_cli(*args: str, cwd: Path, env: Mapping[str, str] | None = None, stdin: str = "",
            timeout: float = 300, preexec_fn: Callable[[], None] | None = None,
            traceback_ok: bool = False) -> Run:
    """`sparkspec ARGS` in a subprocess in `cwd`; the environment is the test's (already cut off
    from the developer's by conftest) unless `env` is given. A traceback is never acceptable
    output: sparkspec's one error boundary prints one line."""
    proc = subprocess.run(cli_command(*args), cwd=cwd, env=dict(env) if env is not None else None,
                          input=stdin, capture_output=True, text=True, timeout=timeout,
                          preexec_fn=preexec_fn)
    if not traceback_ok:
        assert "Traceback" not in proc.stderr, proc.stderr
    return Run(proc.returncode, proc.stdout, proc.stderr)


def start_cli(*args: str, cwd: Path, env: Mapping[str, str] | None = None,
              **popen: Any) -> subprocess.Popen[Any]:
    """`sparkspec ARGS` started in the background (for interrupt and concurrency tests)."""
    return subprocess.Popen(cli_command(*args), cwd=cwd, env=dict(env) if env is not None else os.environ,
                            **popen)


def run_main(args: list[str], cwd: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[int, str, str]:
    """(exit code, stdout, stderr), in-process."""
    monkeypatch.chdir(cwd)
    monkeypatch.setattr(sys, "argv", ["sparkspec", *args])
    with CliRunner().isolation() as (out, err, *_):
        try:
            cli.main()
            code = 0
        except SystemExit as exc:
            code = int(exc.code or 0)
        return code, out.getvalue().decode(), err.getvalue().decode()


Cli = Callable[..., Run]  # the `cli` fixture: cli("plan", cwd=root) -> Run


def run_here(*args: str, cwd: Path, monkeypatch: pytest.MonkeyPatch) -> Run:
    """`run_cli` in this process: the same entry point and error boundary, for tests of what
    sparkspec prints and writes rather than of the process (signals, exit of a real process)."""
    code, out, err = run_main(list(args), cwd, monkeypatch)
    assert "Traceback" not in err, err
    return Run(code, out, err)
