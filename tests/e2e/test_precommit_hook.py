"""The `sparkspec-validate` hook of .pre-commit-hooks.yaml, run by the real pre-commit tool
(`pre-commit try-repo` against this repository) in a temporary git repository."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow  # pre-commit builds a virtual environment with sparkspec in it

SPEC = """\
version: 1
provider: {type: local}
scenes:
  intro:
    prompt_file: prompts/intro.j2
  outro:
    prompt: "The end"
"""


def git(repo: Path, *args: str) -> None:
    subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True,
                   env={**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.com",
                        "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.com"})


def try_repo(repo: Path, home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    pre_commit = [sys.executable, "-m", "pre_commit"]
    return subprocess.run([*pre_commit, "try-repo", str(ROOT), "sparkspec-validate", *args], cwd=repo,
                          capture_output=True, text=True, timeout=900,
                          env={**os.environ, "PRE_COMMIT_HOME": str(home)})


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    return tmp_path_factory.mktemp("pre-commit-home")


def test_the_hook_passes_a_valid_project_and_fails_a_broken_one(tmp_path: Path, home: Path) -> None:
    repo = tmp_path / "repo"
    (repo / "film/prompts").mkdir(parents=True)
    (repo / "film/project.spark.yaml").write_text(SPEC)
    (repo / "film/prompts/intro.j2").write_text("A {{ 'sunny' }} morning\n")
    (repo / "README.md").write_text("not a spec\n")
    git(repo, "init", "-q")
    git(repo, "add", "-A")

    passed = try_repo(repo, home, "--all-files")
    assert passed.returncode == 0, passed.stdout + passed.stderr
    assert "sparkspec validate" in passed.stdout and "Passed" in passed.stdout

    # A broken template fails the hook at the template's own line; so does a bad spec value.
    (repo / "film/prompts/intro.j2").write_text("A {{ weather }} morning\n")
    (repo / "film/project.spark.yaml").write_text(SPEC.replace('"The end"', '"The end"\n    duration: 14'))
    git(repo, "add", "-A")
    failed = try_repo(repo, home, "--all-files")
    assert failed.returncode == 1
    assert "Failed" in failed.stdout
    assert "intro.j2:1:" in failed.stdout and "undefined" in failed.stdout
    assert "film/project.spark.yaml:8:15: error: scenes.outro.duration: 14 is not in 2..12" in failed.stdout

    # A change to a template alone checks the project it belongs to.
    (repo / "film/project.spark.yaml").write_text(SPEC)
    git(repo, "add", "-A")
    template_only = try_repo(repo, home, "--files", "film/prompts/intro.j2")
    assert template_only.returncode == 1
    assert "intro.j2:1:" in template_only.stdout and "undefined" in template_only.stdout


def test_only_the_changed_files_projects_are_checked(tmp_path: Path, home: Path) -> None:
    repo = tmp_path / "repo"
    for name in ("good", "bad"):
        (repo / name).mkdir(parents=True)
        (repo / name / "project.spark.yaml").write_text(SPEC.replace("prompt_file: prompts/intro.j2",
                                                                     'prompt: "hi"'))
    (repo / "bad/project.spark.yaml").write_text("version: 2\n")
    git(repo, "init", "-q")
    git(repo, "add", "-A")
    only_good = try_repo(repo, home, "--files", "good/project.spark.yaml")
    assert only_good.returncode == 0, only_good.stdout
    everything = try_repo(repo, home, "--all-files")
    assert everything.returncode == 1 and "bad/project.spark.yaml:1:" in everything.stdout


def test_a_changed_first_frame_image_or_plain_text_template_checks_its_project(tmp_path: Path, home: Path) -> None:
    from PIL import Image

    repo = tmp_path / "repo"
    (repo / "film/assets").mkdir(parents=True)
    (repo / "film/prompts").mkdir()
    (repo / "film/project.spark.yaml").write_text(
        "version: 1\nprovider: {type: local}\nscenes:\n  intro:\n    first_frame: {image: assets/Frame.PNG}\n"
        "    prompt: \"hi\"\n  outro:\n    prompt_file: prompts/outro.txt\n")
    Image.new("RGB", (640, 360), "red").save(repo / "film/assets/Frame.PNG")
    (repo / "film/prompts/outro.txt").write_text("The end\n")
    git(repo, "init", "-q")
    git(repo, "add", "-A")
    assert try_repo(repo, home, "--files", "film/assets/Frame.PNG").returncode == 0

    Image.new("RGB", (100, 20), "red").save(repo / "film/assets/Frame.PNG")  # below the API's 300 px
    git(repo, "add", "-A")
    image_only = try_repo(repo, home, "--files", "film/assets/Frame.PNG")
    assert image_only.returncode == 1, image_only.stdout
    assert "film/project.spark.yaml:5:26: error: scenes.intro.first_frame.image" in image_only.stdout

    Image.new("RGB", (640, 360), "red").save(repo / "film/assets/Frame.PNG")
    (repo / "film/prompts/outro.txt").write_text("The {{ end\n")
    git(repo, "add", "-A")
    template_only = try_repo(repo, home, "--files", "film/prompts/outro.txt")
    assert template_only.returncode == 1, template_only.stdout
    assert "outro.txt:1:" in template_only.stdout
