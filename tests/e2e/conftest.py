"""Helpers for end-to-end tests: run the real CLI in a subprocess on a project folder."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from cli_runner import Run, run_cli
from dialects import Dialect
from fakeapi import FakeSparkAPI

__all__ = ["Project", "Run"]


class Project:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(("SPARK", "SPARKSPEC_"))}
        self.preexec: Callable[[], None] | None = None  # run as another host (procutil.as_host)

    def write(self, text: str, name: str = "project.spark.yaml") -> None:
        path = self.root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")

    def run(self, *args: str, stdin: str | None = None, timeout: float = 300) -> Run:
        return run_cli(*args, cwd=self.root, env=self.env, stdin=stdin or "", timeout=timeout,
                       preexec_fn=self.preexec)

    def apply(self, *args: str) -> Run:
        """`apply --auto-approve --json`, which must succeed."""
        result = self.run("apply", "--auto-approve", "--json", *args)
        assert result.code == 0, result.err + result.out
        return result

    def lock(self) -> dict[str, Any]:
        return dict(json.loads((self.root / "project.spark.lock").read_text(encoding="utf-8")))

    def lock_bytes(self) -> bytes:
        return (self.root / "project.spark.lock").read_bytes()


@pytest.fixture
def project(tmp_path: Path) -> Project:
    return Project(tmp_path)


@pytest.fixture
def spark(request: pytest.FixtureRequest, project: Project, fake_api: FakeSparkAPI, dialect: Dialect) -> Project:
    """The test module's SPEC (a `{provider}` in it filled in for the dialect: the generation
    protocol unless the test parametrizes `dialect`) in a project whose environment points at
    the fake API."""
    project.write(str(request.module.SPEC).replace("{provider}", dialect.spec_provider()))
    project.env.update(dialect.env(fake_api))
    return project
