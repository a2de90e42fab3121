"""The fetch workers (sparkspec/apply/workers.py): processes that download and check a
finished task's outputs, against the fake gateway on loopback. An apply through them ends as
one on the event loop does, faults and all; a worker that dies fails only the jobs it had
(their tasks stay journalled, collected next time at no new cost); a cancel stops a job at
once and leaves no file; the workers never outlive the apply."""

from __future__ import annotations

import asyncio
import hashlib
import io
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

import sparkspec.apply.tasks as tasks
from fakeapi import FakeSparkAPI
from sparkspec.apply.engine import Engine
from sparkspec.apply.fetch import FetchJob
import sparkspec.apply.workers as workers
from sparkspec.apply.workers import FetchWorkers
from sparkspec.commands.apply import MANY_RENDERS, _spare_cores, early_workers, fetch_worker_count, run_apply
from sparkspec.config.loader import LoadOptions
from sparkspec.plan.model import PlanOptions
from sparkspec.state.workspace import Workspace, open_workspace
from sparkspec.errors import SparkspecError
from sparkspec.plan.model import Plan
from sparkspec.providers.retry import RetryPolicy
from sparkspec.providers.spark.filehost import FileHostSettings
from sparkspec.state.lockfile import read_lock
from test_apply_money import apply

SPEC = """\
version: 1
provider: {type: spark, parallelism: 4, poll: {initial: 0.5, max: 4}}
defaults: {resolution: 480p, frames: 29, seed: 11}
scenes:
""" + "".join(f'  s{i}: {{prompt: "a heron, shot {i}"}}\n' for i in range(6))


@pytest.fixture(scope="module")
def gateway() -> Any:
    with FakeSparkAPI(api_key="sk-workers", render="template") as fake:
        yield fake


@pytest.fixture
def api(gateway: FakeSparkAPI) -> FakeSparkAPI:
    gateway.faults.clear()
    gateway.reset_counters()
    return gateway


def on_the_loop_is_a_defect(*args: Any) -> Any:
    raise AssertionError("a job was fetched on the event loop, not by a worker")


@pytest.mark.slow  # two workers' start-up and six renders: about 3 s
def test_an_apply_through_workers_ends_as_on_the_loop_faults_and_all(tmp_path: Path, api: FakeSparkAPI,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """A cut video is fetched again, an unusable last frame is decoded from the video (with a
    warning): the workers' errors cross back to the engine with their meaning."""
    monkeypatch.setattr(tasks, "fetch_here", on_the_loop_is_a_defect)
    (tmp_path / "project.spark.yaml").write_text(SPEC)
    api.inject("video", "truncate")
    api.inject("image", "garbage")
    engines: list[Engine] = []

    async def note(engine: Engine) -> None:
        engines.append(engine)

    result, events = apply(tmp_path, api, fetch_workers=2, during=note)
    assert result.ok and len(result.completed) == 6 and api.total_creates == 6
    assert api.requests["download"] == 6 * 2 + 1  # the cut video, once more (as on the loop)
    warnings = [e["message"] for e in events if e["event"] == "warning"]
    assert len(warnings) == 1 and "extracted it from the video" in warnings[0]
    lock, _ = read_lock(tmp_path / "project.spark.lock")
    for sid, record in lock.scenes.items():
        for output in (record.video, record.last_frame):
            assert hashlib.sha256((tmp_path / output.path).read_bytes()).hexdigest() == output.sha256, sid
    assert not list((tmp_path / ".sparkspec/tmp").glob("*.part"))
    # Each scene's contact-sheet strip was made as its outputs arrived (in a worker), not left
    # for the review, and kept in memory for it.
    assert {record.video.sha256 for record in lock.scenes.values()} <= engines[0].runner.strips.keys()


@pytest.mark.slow  # about 1.5 s
def test_a_worker_that_dies_fails_its_jobs_and_the_next_apply_collects_them(tmp_path: Path,
                                                                             api: FakeSparkAPI) -> None:
    (tmp_path / "project.spark.yaml").write_text(SPEC)
    api.inject("video", "stall", delay=30.0)
    killed: list[int] = []

    async def kill_the_worker(engine: Engine) -> None:
        while True:  # until a job stalls halfway through its video
            await asyncio.sleep(0.02)
            workers = engine.runner.workers
            if workers is not None and any(p.stat().st_size for p in (tmp_path / ".sparkspec/tmp").glob("*.mp4.part")):
                break
        pid = workers.workers[0].process.pid
        os.kill(pid, signal.SIGKILL)
        killed.append(pid)

    result, _ = apply(tmp_path, api, fetch_workers=1, during=kill_the_worker)
    assert killed and len(result.failed) >= 1
    for message in result.failed.values():
        assert f"the fetch worker (process {killed[0]}) exited" in message
    assert len(result.completed) + len(result.failed) == 6  # the rest fetched on the loop
    again, _ = apply(tmp_path, api)
    assert again.ok and sorted(again.completed) == sorted(result.failed)
    assert api.total_creates == 6  # collected from the journal, not paid again


def settings(api: FakeSparkAPI) -> FileHostSettings:
    return FileHostSettings(api.base_url, 10.0, RetryPolicy(0, 0.0))


def a_video_url(api: FakeSparkAPI, tmp_path: Path) -> str:
    """A finished task's video URL (one apply on the loop)."""
    tmp_path.mkdir()
    (tmp_path / "project.spark.yaml").write_text(SPEC.split("scenes:")[0] + "scenes:\n  one: {prompt: x}\n")
    result, _ = apply(tmp_path, api)
    assert result.ok
    task = next(iter(api.tasks.values()))
    return f"{api.base_url}/files/{task.id}/video.mp4?X-Signature={task.token}"


@pytest.mark.slow  # over a second and a half: the default run stays under 90 s
def test_a_cancelled_fetch_stops_at_once_and_leaves_no_file(tmp_path: Path, api: FakeSparkAPI) -> None:
    url = a_video_url(api, tmp_path / "project")
    api.inject("video", "stall", delay=30.0)
    job = FetchJob(url, None, tmp_path / "v.part", tmp_path / "f.part")

    async def main() -> float:
        workers = FetchWorkers(settings(api), 1)
        await workers.start()
        try:
            fetch = asyncio.create_task(workers.fetch(job))
            while not (job.video_dest.exists() and job.video_dest.stat().st_size):
                await asyncio.sleep(0.01)
            started = time.monotonic()
            fetch.cancel()
            with pytest.raises(asyncio.CancelledError):
                await fetch
            return time.monotonic() - started
        finally:
            await workers.close()

    assert asyncio.run(main()) < 2.0
    assert not job.video_dest.exists() and not job.frame_dest.exists()


KILLED_APPLY = """
import asyncio, sys
from sparkspec.apply.workers import FetchWorkers
from sparkspec.providers.retry import RetryPolicy
from sparkspec.providers.spark.filehost import FileHostSettings
async def main():
    workers = FetchWorkers(FileHostSettings(sys.argv[1], 10.0, RetryPolicy(0, 0.0)), 2)
    await workers.start()
    print(" ".join(str(w.process.pid) for w in workers.workers), flush=True)
    await asyncio.sleep(60)
asyncio.run(main())
"""


@pytest.mark.slow  # over 0.7 s: the default run stays under 90 s on a fresh clone
def test_the_workers_exit_when_the_apply_is_killed(api: FakeSparkAPI) -> None:
    apply_process = subprocess.Popen([sys.executable, "-c", KILLED_APPLY, api.base_url], stdout=subprocess.PIPE,
                                     text=True)
    try:
        assert apply_process.stdout is not None
        pids = [int(p) for p in apply_process.stdout.readline().split()]
        assert len(pids) == 2 and all(Path(f"/proc/{pid}").exists() for pid in pids)
    finally:
        apply_process.kill()
        apply_process.wait()
    deadline = time.monotonic() + 10
    while any(_alive(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(_alive(pid) for pid in pids)


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"  # a zombie has exited; its parent (here: init) reaps it


def test_how_many_workers(tmp_path: Path) -> None:
    empty = Plan(changes=())
    assert fetch_worker_count(empty, {"SPARKSPEC_FETCH_WORKERS": "0"}) == 0
    assert fetch_worker_count(empty, {"SPARKSPEC_FETCH_WORKERS": " 3 "}) == 3
    assert fetch_worker_count(empty, {}) == 0  # nothing to render: none started
    for bad in ("two", "-1", "99"):
        with pytest.raises(SparkspecError, match="SPARKSPEC_FETCH_WORKERS"):
            fetch_worker_count(empty, {"SPARKSPEC_FETCH_WORKERS": bad})


def many_scenes(count: int, provider: str = "spark") -> str:
    return (f"version: 1\nprovider: {{type: {provider}, parallelism: 8, poll: {{initial: 0.01, max: 0.05}}}}\n"
            "defaults: {resolution: 480p, frames: 29}\nscenes:\n"
            + "".join(f'  s{i}: {{prompt: "a heron, shot {i}"}}\n' for i in range(count)))


def run_many(root: Path, api: FakeSparkAPI) -> int:
    environ = {**os.environ, "SPARK_API_KEY": "sk-workers", "SPARK_BASE_URL": api.base_url}
    return run_apply(planfile=None, spec=str(root / "project.spark.yaml"), load_options=LoadOptions(),
                     plan_options=PlanOptions(), auto_approve=True, parallelism=None, as_json=True,
                     fail_fast=False, environ=environ, stdout=io.StringIO())


@pytest.mark.slow  # two applies of MANY_RENDERS scenes: about 3 s
def test_workers_start_before_the_plan_for_many_new_scenes_and_are_stopped_when_the_plan_needs_none(
        tmp_path: Path, api: FakeSparkAPI, monkeypatch: pytest.MonkeyPatch) -> None:
    """An apply of MANY_RENDERS scenes the lock has never recorded starts its workers before
    it plans, and the engine takes those (no second start); when the plan turns out to need
    none (every render in the local cache), the early workers are stopped and reaped."""
    if len(os.sched_getaffinity(0)) < 2:
        pytest.skip("one core: no fetch workers")
    events: list[str] = []
    spawned: list[subprocess.Popen[bytes]] = []
    real_spawn, real_plan = workers.spawn, Workspace.plan

    def spawn(count: int) -> list[workers.Spawned]:
        events.append(f"spawn {count}")
        started = real_spawn(count)
        spawned.extend(process for process, _ in started)
        return started

    def plan(self: Workspace, *args: Any, **kwargs: Any) -> Any:
        events.append("plan")
        return real_plan(self, *args, **kwargs)

    monkeypatch.setattr(workers, "spawn", spawn)
    monkeypatch.setattr(Workspace, "plan", plan)
    (tmp_path / "project.spark.yaml").write_text(many_scenes(MANY_RENDERS))
    assert run_many(tmp_path, api) == 0
    count = _spare_cores()
    assert events == [f"spawn {count}", "plan", "spawn 0"]  # the engine took the early ones
    assert api.total_creates == MANY_RENDERS and len(spawned) == count

    events.clear()
    (tmp_path / "project.spark.lock").unlink()  # every render is in the cache: nothing to fetch
    assert run_many(tmp_path, api) == 0
    assert events == [f"spawn {count}", "plan"] and api.total_creates == MANY_RENDERS
    assert len(spawned) == 2 * count and all(p.returncode is not None for p in spawned[count:])  # stopped, reaped


def test_which_applies_start_workers_before_the_plan(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def spawn(count: int) -> list[workers.Spawned]:
        raise AssertionError(f"spawned {count}")

    monkeypatch.setattr(workers, "spawn", spawn)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    spec = tmp_path / "project.spark.yaml"
    cases = [("local", MANY_RENDERS, PlanOptions(), {}),  # the local renderer has no file host
             ("spark", MANY_RENDERS - 1, PlanOptions(), {}),  # too few
             ("spark", MANY_RENDERS, PlanOptions(targets=("scene.s0",)), {}),  # targeted
             ("spark", MANY_RENDERS, PlanOptions(), {"SPARKSPEC_FETCH_WORKERS": "1"})]  # the variable decides
    for provider, count, options, environ in cases:
        spec.write_text(many_scenes(count, provider))
        workspace = open_workspace(spec)
        try:
            assert early_workers(workspace, options, environ) is None
        finally:
            workspace.close()
    spec.write_text(many_scenes(MANY_RENDERS))
    workspace = open_workspace(spec)
    try:
        with pytest.raises(AssertionError, match="spawned 2"):  # two cores: two workers
            early_workers(workspace, PlanOptions(), {})
    finally:
        workspace.close()


def test_a_fetch_on_the_sheet_brings_its_strip_back_and_writes_no_file(tmp_path: Path) -> None:
    """The strip of a scene on the contact sheet travels with the fetch's outcome (from a
    worker process too: it pickles), nothing is written for it; a scene off the sheet gets
    none, and a video that cannot give one still fetches (the review page reports it)."""
    import pickle

    from sparkspec.apply.fetch import fetched_with_strip
    from sparkspec.media.probe import probe_video
    from sparkspec.providers.base import Downloaded
    from sparkspec.review.contact import GAP, THUMB_WIDTH

    from review.conftest import clip_bytes

    video = tmp_path / "v.mp4"
    clip_bytes(video, 1)
    info = probe_video(video)
    downloaded = Downloaded(video, "ab" * 32, video.stat().st_size)
    before = sorted(tmp_path.iterdir())
    on = fetched_with_strip(FetchJob("v", None, video, tmp_path / "f.png", True, "s1"), downloaded, info, None, "none")
    assert on.strip is not None and on.strip.width == 3 * THUMB_WIDTH + 2 * GAP
    assert pickle.loads(pickle.dumps(on)).strip.image().size == (on.strip.width, on.strip.height)
    assert sorted(tmp_path.iterdir()) == sorted([*before, tmp_path / "f.png"])  # the frame it extracted, no more
    off = fetched_with_strip(FetchJob("v", None, video, tmp_path / "g.png", False, "s2"), downloaded, info, None, "none")
    assert off.strip is None
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(video.read_bytes()[:2000])
    frame = on.frame
    kept = fetched_with_strip(FetchJob("v", "f", broken, tmp_path / "f.png", True, "s3"),
                              Downloaded(broken, "cd" * 32, 2000), info, frame, "none")
    assert kept.strip is None and kept.frame_extracted is None
