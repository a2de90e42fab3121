"""Files sparkspec writes get the mode the user's umask implies, like any other tool's."""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from pathlib import Path

import pytest

from cli_runner import run_cli

SPEC = """\
version: 1
provider: {type: local, parallelism: 2}
defaults: {resolution: 480p, ratio: "1:1", frames: 29, seed: 3}
scenes:
  a: {prompt: "a red kite"}
  b: {prompt: "a blue kite", first_frame: {scene: a}}
sequences:
  film: {scenes: [a, b]}
"""


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def umask(mask: int) -> Callable[[], None]:
    return lambda: os.umask(mask) and None


def test_init_writes_0644_under_umask_022(tmp_path: Path) -> None:
    made = run_cli("init", cwd=tmp_path, preexec_fn=umask(0o022))
    assert made.code == 0, made.err
    assert mode(tmp_path / "project.spark.yaml") == mode(tmp_path / ".gitignore") == 0o644


@pytest.mark.slow  # about 2 s
def test_outputs_lock_and_cache_follow_the_umask(tmp_path: Path) -> None:
    expected = 0o640  # umask 027: not a mode written down anywhere in sparkspec
    (tmp_path / "project.spark.yaml").write_text(SPEC)
    applied = run_cli("apply", "--auto-approve", "--json", cwd=tmp_path, preexec_fn=umask(0o027))
    assert applied.code == 0, applied.err
    renders = tmp_path / "renders"
    written = [tmp_path / "project.spark.lock", renders / "index.html", renders / "film.mp4",
               *(renders / f"{s}.mp4" for s in "ab"), *(renders / f"{s}.last.png" for s in "ab")]
    assert {p.name: oct(mode(p)) for p in written} == {p.name: oct(expected) for p in written}
    blobs = [p for p in (tmp_path / ".sparkspec/cache/blobs").rglob("*") if p.is_file()]
    assert len(blobs) == 4 and all(mode(b) == expected for b in blobs)
