"""A task in a status sparkspec does not know is polled until its own expiry, and no longer:
counted from the `created_at` the API reports, else from when the task was created as this
apply (or the journal) knows it. Against the fake gateway, with a clock that moves only when
the engine sleeps, so an hour passes at once."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest

from fakeapi import FakeSparkAPI
from sparkspec.apply.engine import ApplyResult, Engine
from sparkspec.plan.model import PlanOptions
from sparkspec.providers import make_provider
from sparkspec.state.journal import Journal
from sparkspec.state.workspace import open_workspace

EXPIRES = 3600
SPEC = f"""\
version: 1
provider: {{type: spark, parallelism: 1, poll: {{initial: 5, max: 60}}}}
defaults: {{resolution: 480p, frames: 29, seed: 11, execution_expires_after: {EXPIRES}}}
scenes:
  a: {{prompt: "a heron stands in reeds"}}
"""


class Clock:
    """Wall and monotonic time that move only when the engine sleeps."""

    def __init__(self, start: float) -> None:
        self.start = self.now = start

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += seconds
        await asyncio.sleep(0)


@pytest.fixture
def api(fake_api: FakeSparkAPI) -> FakeSparkAPI:
    fake_api.render_mode = "placeholder"
    fake_api.latency = 10**6  # never done
    fake_api.status_names = {"in_progress": "teleporting"}
    return fake_api


def apply(root: Path, api: FakeSparkAPI, clock: Clock) -> tuple[ApplyResult, list[dict[str, Any]]]:
    spec = root / "project.spark.yaml"
    spec.write_text(SPEC)
    workspace = open_workspace(spec)
    provider = make_provider(workspace.project.provider, workspace.state_dir,
                             {"SPARK_API_KEY": api.api_key, "SPARK_BASE_URL": api.base_url})
    events: list[dict[str, Any]] = []
    engine = Engine(workspace, workspace.plan(PlanOptions()), provider, events.append, parallelism=1,
                    sleep=clock.sleep, wall_clock=clock, monotonic=clock)

    async def run() -> ApplyResult:
        try:
            return await engine.run()
        finally:
            await provider.aclose()

    try:
        return asyncio.run(run()), events
    finally:
        workspace.close()


def expired(result: ApplyResult, events: list[dict[str, Any]], root: Path) -> str:
    """The task's id, after checking the scene failed for its expiry, with one warning, kept journalled."""
    assert not result.ok and "past its expiry" in result.failed["a"]
    warnings = [e for e in events if e["event"] == "warning"]
    assert len(warnings) == 1 and "'teleporting'" in warnings[0]["message"]
    entry, = Journal(root / ".sparkspec/journal").entries()
    assert entry.task_id in result.failed["a"]
    return entry.task_id


def test_expiry_is_counted_from_the_apis_created_at(tmp_path: Path, api: FakeSparkAPI) -> None:
    # Our clock runs 3,000 s ahead of the API's: by the API's created_at the task expires 600 s
    # into the apply; counted from our own submission it would be polled for 3,600 s.
    clock = Clock(time.time() + 3000)
    result, events = apply(tmp_path, api, clock)
    task_id = expired(result, events, tmp_path)
    created = api.tasks[task_id].created_at
    assert created + EXPIRES < clock.now <= created + EXPIRES + 60 + 1  # one poll interval past it
    assert clock.now - clock.start < 700 and api.total_creates == 1


def test_without_created_at_expiry_is_counted_from_the_submission(tmp_path: Path, api: FakeSparkAPI) -> None:
    api.report_created_at = False
    clock = Clock(time.time() + 3000)  # the same skew: now it does not matter
    result, events = apply(tmp_path, api, clock)
    expired(result, events, tmp_path)
    assert EXPIRES < clock.now - clock.start <= EXPIRES + 60 + 1
    assert api.requests["query"] < 100 and api.total_creates == 1

