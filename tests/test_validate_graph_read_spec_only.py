"""`validate` and `graph` look at the spec alone: a broken lock or cache does not stop them."""

from __future__ import annotations

from pathlib import Path

from cli_runner import Cli

SPEC = """\
version: 1
provider: {type: local}
scenes:
  a: {prompt: "a kite"}
  b: {prompt: "a boat", first_frame: {scene: a}}
"""


def test_validate_and_graph_never_read_the_lock_or_the_cache(cli: Cli, tmp_path: Path) -> None:
    (tmp_path / "project.spark.yaml").write_text(SPEC)
    (tmp_path / "project.spark.lock").write_text("<<<<<<< HEAD\nnot a lock at all\n")
    (tmp_path / ".sparkspec").write_text("a file where the state folder should be")
    validated = cli("validate", cwd=tmp_path)
    assert (validated.code, validated.err) == (0, "")
    assert validated.out == "project.spark.yaml: valid (2 scenes, 0 sequence(s)).\n"
    graphed = cli("graph", cwd=tmp_path)
    assert graphed.code == 0 and "a" in graphed.out and "b" in graphed.out
    assert cli("plan", cwd=tmp_path).code == 1  # plan does read the lock


def test_validate_files_as_the_pre_commit_hook_calls_it_never_reads_the_lock(cli: Cli, tmp_path: Path) -> None:
    # The hook runs during a merge, when the lock may well have conflict markers.
    (tmp_path / "project.spark.yaml").write_text(SPEC)
    (tmp_path / "project.spark.lock").write_text("<<<<<<< HEAD\nnot a lock at all\n")
    (tmp_path / ".sparkspec").write_text("a file where the state folder should be")
    validated = cli("validate", "project.spark.yaml", cwd=tmp_path)
    assert (validated.code, validated.err) == (0, "")
    assert validated.out == "project.spark.yaml: valid\n"  # on stdout, as `validate` alone prints it


def test_validate_of_a_file_that_does_not_exist_is_an_error(cli: Cli, tmp_path: Path) -> None:
    # A typo must not pass by validating the project beside it.
    (tmp_path / "project.spark.yaml").write_text(SPEC)
    result = cli("validate", "prompts/intro.j2", "project.spark.yaml", cwd=tmp_path)
    assert result.code == 1
    assert result.err == "error: prompts/intro.j2: no such file\n"
    assert result.out == "project.spark.yaml: valid\n"
