"""Helpers for end-to-end tests: run the real CLI in a subprocess on a project folder."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest


@dataclass
class Run:
    code: int
    out: str
    err: str

    def events(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.out.splitlines() if line.strip()]

    def rendered(self) -> list[str]:
        return sorted(e["scene"] for e in self.events() if e["event"] == "completed")


class Project:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(("SPARK", "SPARKSPEC_"))}

    def write(self, text: str, name: str = "project.spark.yaml") -> None:
        path = self.root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")

    def run(self, *args: str, stdin: str | None = None, timeout: float = 300) -> Run:
        proc = subprocess.run([sys.executable, "-m", "sparkspec", *args], cwd=self.root, env=self.env,
                              input=stdin if stdin is not None else "", capture_output=True, text=True,
                              timeout=timeout)
        assert "Traceback" not in proc.stderr, proc.stderr
        return Run(proc.returncode, proc.stdout, proc.stderr)

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
