"""Ctrl-C during apply: no new submissions, exit 130, what finished is kept, nothing re-rendered."""

from __future__ import annotations

import json
import signal
import subprocess
import time

import pytest

from cli_runner import start_cli

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
