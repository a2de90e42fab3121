"""A claim left on the team's remote by a crashed apply on this very machine (its process gone)
is taken over at once, not waited out for its ttl; a claim of a process that still runs, or of
another host or container, never is. Through the CLI, the local renderer and a shared folder;
the claims are written through the store as the crashed apply wrote them."""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
from dataclasses import replace
from pathlib import Path

import pytest

from cli_runner import Cli
from sparkspec.remote import holder
from sparkspec.remote.claims import Claim, ClaimTask
from sparkspec.remote.layout import claim_path
from sparkspec.remote.settings import RemoteSettings
from sparkspec.remote.store import Store, open_store

SPEC = """\
version: 1
name: claims-here
provider: {type: local}
defaults: {resolution: 480p, ratio: "16:9", frames: 29, seed: 5}
scenes:
  hero: {prompt: "a kite over the dunes"}
"""

pytestmark = pytest.mark.skipif(holder.machine() is None, reason="needs Linux /proc")


@pytest.fixture
def root(tmp_path: Path) -> Path:
    (tmp_path / "project").mkdir()
    (tmp_path / "project" / "project.spark.yaml").write_text(
        SPEC + f"remote: {{url: 'file://{tmp_path}/team', claim_ttl: 120}}\n")
    return tmp_path / "project"


def store_of(root: Path) -> Store:
    return open_store(RemoteSettings(f"file://{root.parent}/team"), {})


def hero_key(cli: Cli, root: Path) -> str:
    plan = json.loads(cli("plan", "--json", cwd=root).out)
    return str(next(c["key"] for c in plan["changes"] if c["id"] == "hero"))


def process(alive: bool) -> tuple[int, str, subprocess.Popen[bytes]]:
    """A real process's pid and start; ended and reaped unless `alive`."""
    proc = subprocess.Popen(["sleep", "60"])
    start = holder.started(proc.pid)
    assert start is not None
    if not alive:
        proc.kill()
        proc.wait()
    return proc.pid, start, proc


def leave_claim(root: Path, key: str, pid: int, started: str | None, **fields: object) -> Claim:
    """The claim an apply with that pid made before it crashed (no task submitted yet)."""
    claim = Claim(key=key, owner="crashed-run", user="ana", host=socket.gethostname(), pid=pid, ttl=120.0,
                  start=started, machine=holder.machine())
    claim = replace(claim, **fields)  # type: ignore[arg-type]
    assert asyncio.run(store_of(root).create(claim_path(key), claim.encode())) is not None
    return claim


def claims_left(root: Path) -> list[str]:
    return [info.path for info in asyncio.run(store_of(root).list("claims/"))]


def test_a_crashed_applys_claim_on_this_machine_is_taken_over_at_once(cli: Cli, root: Path) -> None:
    key = hero_key(cli, root)
    pid, start, _ = process(alive=False)
    leave_claim(root, key, pid, start)

    text = cli("plan", cwd=root)
    assert "+ scene.hero (create)" in text.out and "(wait)" not in text.out
    assert f"a claim left on the team's remote by a crashed apply on this machine (ana@{socket.gethostname()}, " \
           f"pid {pid}) is taken over" in text.out
    done = cli("apply", "--auto-approve", "--no-wait", cwd=root)  # --no-wait: nothing to wait for
    assert done.code == 0, done.out + done.err
    assert f"hero: taken over: the claim of ana@{socket.gethostname()} (pid {pid})" in done.out
    assert "hero: rendered" in done.out and claims_left(root) == []


def test_a_claim_whose_pid_now_belongs_to_another_process_is_taken_over(cli: Cli, root: Path) -> None:
    key = hero_key(cli, root)
    pid, start, other = process(alive=True)
    try:
        leave_claim(root, key, pid, str(int(start) - 1))  # that pid, started at another moment
        done = cli("apply", "--auto-approve", "--no-wait", cwd=root)
        assert done.code == 0, done.out + done.err
        assert "taken over" in done.out and claims_left(root) == []
    finally:
        other.kill()
        other.wait()


@pytest.mark.parametrize("where", ["running here", "another host", "another container", "older sparkspec"])
def test_a_claim_not_known_dead_is_never_taken_over_early(cli: Cli, root: Path, where: str) -> None:
    key = hero_key(cli, root)
    pid, start, proc = process(alive=where == "running here")
    try:
        fields: dict[str, object] = {
            "running here": {}, "another host": {"host": "elsewhere"},
            "another container": {"machine": f"{holder.machine()}-other"},
            "older sparkspec": {"start": None, "machine": None}}[where]
        leave_claim(root, key, pid, start, **fields)
        text = cli("plan", cwd=root)
        assert "… scene.hero (wait)" in text.out and "taken over" not in text.out
        skipped = cli("apply", "--auto-approve", "--no-wait", cwd=root)
        assert skipped.code == 1 and "--no-wait" in skipped.out + skipped.err
        assert len(claims_left(root)) == 1  # left to its holder, or to its ttl
    finally:
        proc.kill()
        proc.wait()


def test_the_crashed_applys_task_in_its_claim_is_collected_at_no_new_cost(cli: Cli, root: Path) -> None:
    """What the plan says of such a claim that names a task; that apply collects it is the
    slow journey in tests/e2e/test_remote_claims.py (a real apply, killed)."""
    key = hero_key(cli, root)
    pid, start, _ = process(alive=False)
    task = ClaimTask("local-task-1", "local", submitted_at=__import__("time").time(), expires_after=3600)
    leave_claim(root, key, pid, start, task=task)
    text = cli("plan", cwd=root)
    assert "< scene.hero (collect)" in text.out
    assert "is taken over: its task local-task-1 is collected at no new cost" in text.out
    assert json.loads(cli("plan", "--json", cwd=root).out)["summary"]["estimated_tokens"] == 0
    # Past its expiry too: it may have finished, paid for, before it expired (the API says).
    expired = replace(task, submitted_at=task.submitted_at - 7200)
    asyncio.run(store_of(root).delete(claim_path(key)))
    leave_claim(root, key, pid, start, task=expired)
    assert "< scene.hero (collect)" in cli("plan", cwd=root).out


@pytest.mark.slow  # waits out a claim's ttl
def test_a_budget_stops_the_render_of_a_claim_that_ended_without_it(cli: Cli, root: Path) -> None:
    # The plan counts a wait at no cost (another machine renders it); when that claim dies and
    # apply would render the scene itself, the budget is asked first.
    key = hero_key(cli, root)
    leave_claim(root, key, 4242, None, host="elsewhere", ttl=0.5)
    text = cli("plan", cwd=root)
    assert "… scene.hero (wait)" in text.out
    refused = cli("apply", "--auto-approve", "--max-tokens", "0", cwd=root)
    assert refused.code == 1, refused.out + refused.err
    assert "the plan did not count" in refused.out + refused.err and "nothing was submitted" in refused.out + refused.err
    assert not (root / "renders" / "hero.mp4").exists()


def test_no_wait_needs_no_api_key_when_all_it_would_render_is_rendering_elsewhere(cli: Cli, root: Path) -> None:
    """The wait counted as a render: apply refused as a whole for want of SPARK_API_KEY, though
    with --no-wait it submits nothing."""
    spec = root / "project.spark.yaml"
    spec.write_text(spec.read_text().replace("provider: {type: local}", "provider: {type: spark}"))
    key = hero_key(cli, root)
    pid, start, _ = process(alive=False)
    leave_claim(root, key, pid, start, host="elsewhere")  # another host's: not known dead
    assert "… scene.hero (wait)" in cli("plan", cwd=root).out
    skipped = cli("apply", "--auto-approve", "--no-wait", cwd=root)
    assert skipped.code == 1 and "hero: skipped" in skipped.err and "(--no-wait)" in skipped.err, skipped.err
    assert "no API key" not in skipped.out + skipped.err
    waiting = cli("apply", "--auto-approve", cwd=root)  # waiting may render here: the key is asked for
    assert waiting.code == 1 and "no API key" in waiting.err
