"""Paid once across machines: claims on the team's remote, with real `sparkspec apply` processes
(each its own HOME, cache and clone) against one remote and the fake API on loopback."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

from cli_runner import start_cli
from fakeapi import FakeSparkAPI
from procutil import as_host, can_be_another_host
from sparkspec.remote.settings import RemoteSettings
from sparkspec.remote.store import Store, open_store

from .conftest import Project
from .test_remote import machine

SPEC = """\
version: 1
name: team-film
provider: {type: spark, parallelism: 4, poll: {initial: 0.05, max: 0.2}}
defaults: {resolution: 480p, ratio: "16:9", frames: 29}
scenes:
""" + "".join(f"  s{i}: {{prompt: \"paper lantern number {i} over a lake\"}}\n" for i in range(5)) + \
    "  after: {first_frame: {scene: s0}, prompt: \"the lantern drifts away\"}\n"

ONE = """\
version: 1
name: team-film
provider: {type: spark, parallelism: 2, poll: {initial: 0.05, max: 0.2}}
defaults: {resolution: 480p, ratio: "16:9", frames: 29}
scenes:
  hero: {prompt: "a kite over the dunes"}
"""


def start(project: Project, *args: str) -> subprocess.Popen[str]:
    return start_cli("apply", "--auto-approve", "--json", *args, cwd=project.root, env=project.env,
                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def events(out: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in out.splitlines() if line.strip()]


@pytest.mark.slow
@pytest.mark.parametrize("remote_kind", ["file", "moto", "seaweedfs"])
def test_two_machines_at_once_create_each_key_once(tmp_path: Path, fake_api: FakeSparkAPI, remote_kind: str,
                                                   request: pytest.FixtureRequest) -> None:
    fake_api.latency = (0.8, 1.6)
    extra: dict[str, str] = {}
    if remote_kind != "file":
        server = request.getfixturevalue(f"{remote_kind}_server")
        remote = server.bucket()
        extra = server.env()
    else:
        remote = f"file://{tmp_path}/team-remote"
    laptops = [machine(tmp_path, name, fake_api, remote, extra) for name in ("ana", "ben")]
    for laptop in laptops:
        laptop.write(SPEC)
    running = [start(laptop) for laptop in laptops]
    outputs = [proc.communicate(timeout=300) for proc in running]
    for proc, (out, err) in zip(running, outputs):
        assert proc.returncode == 0, err + out
        assert "Traceback" not in err
    assert sorted(fake_api.creates_by_key.values()) == [1] * 6, fake_api.creates_by_prompt()
    made = [{e["scene"] for e in events(out) if e["event"] == "completed"} for out, _ in outputs]
    pulled = [{e["scene"] for e in events(out) if e["event"] == "pulled"} for out, _ in outputs]
    for mine, theirs in zip(made, pulled):
        assert mine | theirs == {"s0", "s1", "s2", "s3", "s4", "after"}
    assert not (made[0] & made[1])
    ana, ben = (laptop.lock()["scenes"] for laptop in laptops)
    assert {k: v["video"]["sha256"] for k, v in ana.items()} == {k: v["video"]["sha256"] for k, v in ben.items()}


def claim_with_task(store: Store) -> dict[str, object] | None:
    for info in asyncio.run(store.list("claims/")):
        got = asyncio.run(store.get(info.path))
        try:
            body = json.loads(got[0]) if got is not None else {}
        except ValueError:
            continue
        if body.get("task"):
            return dict(body)
    return None


@pytest.mark.slow
@pytest.mark.parametrize(("remote_kind", "where", "stop"), [
    pytest.param(kind, where, stop, id=f"{kind}-{where.replace(' ', '-')}-{stop.name}") for kind, where, stop in [
        ("file", "another host", signal.SIGKILL), ("seaweedfs", "another host", signal.SIGKILL),
        ("file", "this host", signal.SIGKILL), ("file", "another host", signal.SIGINT),
        ("file", "this host", signal.SIGINT)]])
def test_a_killed_claim_holder_is_taken_over_and_its_task_collected(tmp_path: Path, fake_api: FakeSparkAPI,
                                                                    remote_kind: str, where: str, stop: int,
                                                                    request: pytest.FixtureRequest) -> None:
    """On another host the claim is taken over once its ETag has stalled for its ttl; on this
    host, whose process table shows the holder gone, at once (its ttl here is the default 120 s).
    A Ctrl-C (SIGINT) leaves the claim as a kill does: its task still renders, paid for (the
    claim was deleted, and the other machine paid for the scene again)."""
    fake_api.latency = 6.0
    env = {"SPARKSPEC_REMOTE_CLAIM_TTL": "2"} if where == "another host" else {}
    if remote_kind == "file":
        remote = f"file://{tmp_path}/team-remote"
        store = open_store(RemoteSettings(remote), {})
    else:  # If-Match on a real S3 server: the takeover and the heartbeats
        server = request.getfixturevalue(f"{remote_kind}_server")
        remote = server.bucket()
        env.update(server.env())
        store = open_store(RemoteSettings(remote, endpoint=server.endpoint), server.env())
    ana = machine(tmp_path, "ana", fake_api, remote, env)
    ben = machine(tmp_path, "ben", fake_api, remote, env)
    if where == "another host":
        if not can_be_another_host():
            pytest.skip("running a process as another host needs a UTS namespace (root on Linux)")
        ben.preexec = as_host("ben-laptop")
    ana.write(ONE)
    ben.write(ONE)
    holder = start(ana)
    deadline = time.monotonic() + 60
    claim = None
    while claim is None and time.monotonic() < deadline and holder.poll() is None:
        time.sleep(0.05)
        claim = claim_with_task(store)
    assert claim is not None, "the holder never wrote its task id into its claim"
    os.kill(holder.pid, stop)
    holder.communicate(timeout=60)
    assert holder.returncode == (130 if stop == signal.SIGINT else -signal.SIGKILL)
    assert fake_api.total_creates == 1
    assert claim_with_task(store) is not None  # left to lapse, naming its task
    task = claim["task"]["id"]  # type: ignore[index]

    planned = ben.run("plan")
    if where == "another host":
        assert "… scene.hero (wait)" in planned.out and "rendering on " in planned.out
        assert f"task {task}" in planned.out
        skipped = ben.run("apply", "--auto-approve", "--no-wait")
        assert skipped.code == 1 and "--no-wait" in skipped.out + skipped.err
        taker = ben.apply()
    else:
        assert "< scene.hero (collect)" in planned.out, planned.out
        assert f"crashed apply on this machine ({claim['user']}@{socket.gethostname()}, pid {holder.pid})" \
            in planned.out and f"its task {task} is collected at no new cost" in planned.out
        began = time.monotonic()
        taker = ben.apply("--no-wait")  # nothing to wait for: its holder is gone
        assert time.monotonic() - began < 60  # well within the claim's ttl of 120 s
        assert any(e.get("state") == "taken over" for e in taker.events())
    collected = [e for e in taker.events() if e["event"] == "completed"]
    assert [e["task_id"] for e in collected] == [task]
    assert fake_api.total_creates == 1  # collected, not paid again
    assert asyncio.run(store.list("claims/")) == []  # released
    assert [e["scene"] for e in taker.events() if e["event"] == "pushed"] == ["hero"]
