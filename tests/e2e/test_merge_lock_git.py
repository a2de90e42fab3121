"""merge-lock as git runs it: two branches each render a different scene, `git merge` with
the driver configured yields one valid lock with both scenes and no conflict markers."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys

import pytest

from .conftest import Project

SPEC = """\
version: 1
provider: {type: local, parallelism: 1}
defaults: {resolution: 480p, ratio: "1:1", frames: 29, seed: 3}
scenes:
  intro: {prompt: "a red kite over a beach"}
  outro: {prompt: "a blue kite lands in the sand"}
"""


def git(project: Project, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    env = {**project.env, "GIT_CONFIG_NOSYSTEM": "1", "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.com",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.com"}
    proc = subprocess.run(["git", *args], cwd=project.root, env=env, capture_output=True, text=True, timeout=120)
    if check:
        assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


@pytest.mark.slow  # two real renders and several git and sparkspec processes
def test_git_merge_with_the_driver_keeps_both_branches_renders(project: Project) -> None:
    project.write(SPEC)
    project.write("project.spark.lock merge=sparkspec\n", ".gitattributes")
    project.write(".sparkspec/\nrenders/\n", ".gitignore")
    git(project, "init", "-q", "-b", "main")
    git(project, "add", ".")
    git(project, "commit", "-q", "-m", "spec")
    git(project, "checkout", "-q", "-b", "outro")
    assert project.apply("--target", "outro").rendered() == ["outro"]
    git(project, "add", "project.spark.lock")
    git(project, "commit", "-q", "-m", "outro rendered")
    git(project, "checkout", "-q", "main")
    assert project.apply("--target", "intro").rendered() == ["intro"]
    git(project, "add", "project.spark.lock")
    git(project, "commit", "-q", "-m", "intro rendered")

    # Without the driver, git's line merge conflicts on the lock: the driver is what helps.
    plain = git(project, "merge", "--no-edit", "outro", check=False)
    assert plain.returncode != 0 and "<<<<<<<" in (project.root / "project.spark.lock").read_text()
    git(project, "merge", "--abort")

    driver = f"{shlex.quote(sys.executable)} -m sparkspec merge-lock %O %A %B"
    git(project, "config", "merge.sparkspec.name", "sparkspec lock merge")
    git(project, "config", "merge.sparkspec.driver", driver)
    git(project, "merge", "--no-edit", "outro")
    text = (project.root / "project.spark.lock").read_text(encoding="utf-8")
    assert "<<<<<<<" not in text and ">>>>>>>" not in text
    lock = json.loads(text)
    assert sorted(lock["scenes"]) == ["intro", "outro"]
    assert git(project, "status", "--porcelain").stdout == ""
    # The merged lock is one sparkspec accepts and that matches renders/: nothing to do.
    shown = project.run("plan", "--json")
    assert shown.code == 0, shown.err
    summary = json.loads(shown.out)["summary"]
    assert summary["render"] == 0 and summary["unchanged"] == 2, summary
    assert os.path.exists(project.root / "renders/intro.mp4") and os.path.exists(project.root / "renders/outro.mp4")
