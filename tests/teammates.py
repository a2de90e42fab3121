"""Two machines of one team: `first` has rendered a two-scene spec with the local provider and
pushed it to a shared-folder remote; `second` has the same spec (and not yet the lock)."""

from __future__ import annotations

from pathlib import Path

from cli_runner import Cli

SPEC = """\
version: 1
name: teammates
provider: {type: local, parallelism: 2}
defaults: {resolution: 480p, ratio: "16:9", frames: 29, seed: 3}
scenes:
  one: {prompt: "a paper boat"}
  two: {prompt: "a paper plane"}
"""


def two_machines(tmp_path: Path, cli: Cli) -> tuple[Path, Path]:
    remote = tmp_path / "remote"
    first, second = tmp_path / "first", tmp_path / "second"
    for root in (first, second):
        root.mkdir()
        (root / "project.spark.yaml").write_text(SPEC + f"remote: {{url: 'file://{remote}'}}\n")
    assert cli("apply", "--auto-approve", cwd=first).code == 0
    return first, second
