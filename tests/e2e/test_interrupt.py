"""Ctrl-C during apply: no new submissions, exit 130, what finished is kept, nothing re-rendered."""

from __future__ import annotations

import json
import signal
import subprocess
import time

import pytest

from cli_runner import start_cli
from fakeapi import FakeSparkAPI

from .conftest import Project

SPEC = """\
version: 1
provider: {type: local, parallelism: 1}
defaults: {resolution: 480p, frames: 29}
scenes:
""" + "".join(f"  s{i}: {{prompt: \"shot number {i} of a slow river\"}}\n" for i in range(8))


@pytest.mark.slow  # waits for real renders to be under way, then for the running ones
@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_ctrl_c_stops_new_submissions_and_exits_130(project: Project, stop: signal.Signals) -> None:
    """SIGTERM (a cancelled CI job, `kill`) is handled as a Ctrl-C."""
    project.write(SPEC)
    proc = start_cli("apply", "--auto-approve", "--json", cwd=project.root, env=project.env,
                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    events = []
    for line in proc.stdout:  # wait for the first finished render, then interrupt
        events.append(json.loads(line))
        if events[-1]["event"] == "completed":
            proc.send_signal(stop)
            break
    started = time.monotonic()
    out, err = proc.communicate(timeout=60)
    events += [json.loads(line) for line in out.splitlines()]
    assert proc.returncode == 130, err
    assert time.monotonic() - started < 30
    assert "Traceback" not in err
    done = events[-1]
    assert done["event"] == "done" and done["interrupted"] is True and done["ok"] is False
    # every count an ordinary `done` has (`pulled` was missing)
    assert {"completed", "failed", "skipped", "reused", "restored", "pulled", "deleted", "stitched",
            "tokens"} <= set(done)
    # A local render dies with the apply: nothing is "still rendering remotely".
    assert done["running"] == [] and "remotely" not in err
    finished = sorted(e["scene"] for e in events if e["event"] == "completed")
    assert 1 <= len(finished) < 8
    lock = project.lock()
    assert sorted(lock["scenes"]) == finished

    # The next apply renders only what was left, and nothing already rendered.
    rest = project.apply()
    assert set(rest.rendered()) == {f"s{i}" for i in range(8)} - set(finished)


REPLACED = """\
version: 1
provider: {type: spark, parallelism: 2, poll: {initial: 0.05, max: 0.2}}
defaults: {resolution: 480p, ratio: "16:9", frames: 29}
scenes:
  dune: {prompt: "a dune at dusk"}
  owl: {first_frame: {scene: dune}, prompt: "an owl lands on the dune"}
"""


@pytest.mark.slow  # a render, then one interrupted while the API renders it
@pytest.mark.parametrize("target", ["dune", "dune.take1"])
def test_a_replace_interrupted_after_its_create_is_collected_by_the_next_replace(
        project: Project, fake_api: FakeSparkAPI, target: str) -> None:
    """Ctrl-C on `apply --replace dune` once its task was created (paid for): a plain plan says
    the task waits in the journal, and `apply --replace dune` run again collects it instead of
    paying for another. Take 1 of a scene of two takes, named as `dune.take1`, too (its collect
    took the cache's old render: the take's name was not matched)."""
    fake_api.unique = True
    takes = 2 if target.endswith("take1") else 1
    project.write(REPLACED.replace('dune: {prompt: "a dune at dusk"}',
                                   f'dune: {{prompt: "a dune at dusk", takes: {takes}}}'))
    project.env.update(SPARK_API_KEY=fake_api.api_key, SPARK_BASE_URL=fake_api.base_url)
    project.apply()
    assert fake_api.total_creates == 1 + takes
    fake_api.latency = 3.0
    proc = start_cli("apply", "--auto-approve", "--json", "--replace", target, cwd=project.root, env=project.env,
                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    for line in proc.stdout:
        if json.loads(line)["event"] == "submitted":
            proc.send_signal(signal.SIGINT)
            break
    proc.communicate(timeout=60)
    assert proc.returncode == 130 and fake_api.total_creates == 2 + takes
    fake_api.latency = 0.0

    plan = project.run("plan")
    assert "No changes" in plan.out, plan.out
    assert f"`sparkspec apply --replace {target}` collects it at no new cost" in plan.err, plan.err
    replaced = project.run("plan", "--replace", target)
    assert "< scene.dune (collect)" in replaced.out and "0 to render" not in replaced.out.split("Plan:")[0], \
        replaced.out
    applied = project.apply("--replace", target)
    assert [e["task_id"] for e in applied.events() if e.get("state") == "collecting"], applied.out
    # The interrupted replace's task collected, and owl, chained after the new dune, rendered once.
    assert fake_api.total_creates == takes + 3
    assert "No changes" in project.run("plan").out
