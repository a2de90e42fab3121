"""A lock sparkspec cannot use says why and how to go on: merge conflicts, a newer version."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from cli_runner import Cli
from test_plan import BASE, SPEC, fake_apply


@pytest.fixture
def root(tmp_path: Path) -> Path:
    (tmp_path / SPEC).write_text(BASE)
    fake_apply(tmp_path)
    return tmp_path


def git(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@example.com", *args], cwd=root,
                          capture_output=True, text=True)


def test_a_lock_with_merge_conflicts_says_so_and_how_to_go_on(cli: Cli, root: Path) -> None:
    lock_file = root / "project.spark.lock"
    git(root, "init", "-q", "-b", "main")
    git(root, "add", "project.spark.lock")
    git(root, "commit", "-qm", "base")
    original = lock_file.read_text()
    git(root, "checkout", "-qb", "other")
    lock_file.write_text(original.replace('"task-logo"', '"task-logo-theirs"'))
    git(root, "commit", "-qam", "theirs")
    git(root, "checkout", "-q", "main")
    lock_file.write_text(original.replace('"task-logo"', '"task-logo-ours"'))
    git(root, "commit", "-qam", "ours")
    assert git(root, "merge", "-q", "other").returncode != 0
    line = 1 + lock_file.read_text().splitlines().index("<<<<<<< HEAD")
    for command in ("plan", "apply", "show"):
        refused = cli(command, cwd=root)
        assert refused.code == 1
        assert refused.err.splitlines() == [
            f"error: project.spark.lock has merge conflicts at line {line}, so it is no lock yet; keep one "
            "side (`git checkout "
            "--ours project.spark.lock` or `--theirs`) and run `sparkspec plan`: the other side's renders "
            "are reused from the cache where this machine has them"]
    git(root, "checkout", "--theirs", "project.spark.lock")
    assert cli("plan", cwd=root).code == 0


def test_a_lock_from_a_newer_sparkspec_says_upgrade(cli: Cli, root: Path) -> None:
    lock_file = root / "project.spark.lock"
    lock_file.write_text(json.dumps({**json.loads(lock_file.read_text()), "version": 2}))
    refused = cli("plan", cwd=root)
    assert refused.code == 1
    assert refused.err.splitlines() == [
        "error: project.spark.lock was written by a newer sparkspec (lock version 2; this one reads "
        "version 1); upgrade sparkspec (`pip install -U sparkspec`)"]


def test_json_nested_too_deeply_is_malformed_not_an_internal_error(cli: Cli, root: Path) -> None:
    # A thousand `[` overflow Python's JSON parser (a RecursionError): still bad input, exit 1.
    deep = "[" * 100_000 + "]" * 100_000
    (root / "project.spark.lock").write_text(deep)
    for command in ("plan", "show"):
        refused = cli(command, cwd=root)
        assert refused.code == 1 and refused.err.splitlines() == [
            "error: project.spark.lock:1:1: the lock is not valid JSON (nested too deeply); restore it "
            "from git or delete it to render afresh"]
    (root / "deep.plan").write_text(deep)
    assert cli("apply", "deep.plan", cwd=root).code == 1
    (root / "deep.lock").write_text(deep)
    merged = cli("merge-lock", "deep.lock", "deep.lock", "deep.lock", cwd=root)
    assert merged.code == 1 and "nested too deeply" in merged.err
