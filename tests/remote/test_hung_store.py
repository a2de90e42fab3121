"""A store that accepts connections and never answers (a black hole on loopback): `pull` fails
with one line in about SPARKSPEC_REMOTE_TIMEOUT seconds, and `plan` goes on without it after one
warning, instead of each waiting out the store client's default of minutes."""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from blackhole import BlackHole
from cli_runner import run_cli
from sparkspec.state.lockfile import FileRecord, Lock, SceneRecord, write_lock

SPEC = """\
version: 1
name: hung-store
provider: {type: local}
defaults: {resolution: 480p, frames: 29}
scenes:
  intro: {prompt: "a red kite"}
remote: {url: "s3://team-bucket/renders"}
"""


@pytest.fixture
def hole() -> Iterator[BlackHole]:
    with BlackHole() as server:
        yield server


def cloned(root: Path) -> Path:
    """A clone whose lock names a render that is neither in renders/ nor in its cache."""
    root.mkdir()
    (root / "project.spark.yaml").write_text(SPEC)
    sha = secrets.token_hex(32)
    record = SceneRecord(key=secrets.token_hex(32), provider="local", model="local", task_id="t", seed=1, tokens=0,
                         video=FileRecord("renders/intro.mp4", sha, 20_000),
                         last_frame=FileRecord("renders/intro.last.png", secrets.token_hex(32), 700))
    write_lock(root / "project.spark.lock", Lock({"intro": record}))
    return root


def environment(hole: BlackHole, timeout: str | None) -> dict[str, str]:
    import os

    env = dict(os.environ, AWS_ENDPOINT_URL_S3=f"http://127.0.0.1:{hole.port}", AWS_ACCESS_KEY_ID="AKIDEXAMPLE",
               AWS_SECRET_ACCESS_KEY="never-print-this", AWS_REGION="us-east-1")
    if timeout is not None:
        env["SPARKSPEC_REMOTE_TIMEOUT"] = timeout
    return env


@pytest.mark.slow  # over a second: the default run stays under 90 s
def test_pull_from_a_store_that_never_answers_fails_in_its_timeout(tmp_path: Path, hole: BlackHole) -> None:
    root = cloned(tmp_path / "clone")
    began = time.monotonic()
    run = run_cli("pull", cwd=root, env=environment(hole, "0.5"), timeout=20)
    took = time.monotonic() - began
    assert hole.held, "sparkspec never reached the store"
    assert run.code == 1 and took < 10, (took, run.err)
    lines = [line for line in (run.out + run.err).splitlines() if "s3://team-bucket/renders" in line]
    assert len(lines) == 1 and "no answer from the store in time (timed out)" in lines[0], run.out + run.err
    assert "never-print-this" not in run.out + run.err


@pytest.mark.slow  # over a second: the default run stays under 90 s
def test_plan_goes_on_without_a_store_that_never_answers(tmp_path: Path, hole: BlackHole) -> None:
    root = cloned(tmp_path / "clone")
    began = time.monotonic()
    run = run_cli("plan", cwd=root, env=environment(hole, "0.5"), timeout=20)
    assert run.code == 0 and time.monotonic() - began < 10, run.err
    assert "scene.intro" in run.out  # planned without the remote
    warnings = [line for line in run.err.splitlines() if line.startswith("warning: remote")]
    assert len(warnings) == 1 and "timed out" in warnings[0], run.err


@pytest.mark.slow
def test_with_the_default_timeout_a_hung_store_costs_a_pull_seconds(tmp_path: Path, hole: BlackHole) -> None:
    root = cloned(tmp_path / "clone")
    began = time.monotonic()
    run = run_cli("pull", cwd=root, env=environment(hole, None), timeout=120)
    took = time.monotonic() - began
    assert run.code == 1 and "timed out" in run.err and took < 30, (took, run.err)


def test_a_timeout_that_is_not_a_number_of_seconds_is_refused(tmp_path: Path, hole: BlackHole) -> None:
    root = cloned(tmp_path / "clone")
    run = run_cli("pull", cwd=root, env=environment(hole, "soon"), timeout=20)
    assert run.code == 1 and "SPARKSPEC_REMOTE_TIMEOUT='soon'" in run.err


@pytest.mark.slow  # a render and a plan that waits out the store's timeout
def test_apply_asks_a_store_that_did_not_answer_its_plan_nothing_more(tmp_path: Path, hole: BlackHole) -> None:
    # Each upload, the claim probe and the contact sheet waited out a timeout of their own:
    # about a minute more for one scene with the default timeout.
    root = tmp_path / "fresh"
    root.mkdir()
    (root / "project.spark.yaml").write_text(SPEC)
    began = time.monotonic()
    run = run_cli("apply", "--auto-approve", cwd=root, env=environment(hole, "1"), timeout=60)
    took = time.monotonic() - began
    assert run.code == 0 and "intro: rendered" in run.out, run.out + run.err
    assert "queued" in run.out + run.err and took < 8, (took, run.out + run.err)
    assert "did not answer the plan in time" in run.out + run.err
