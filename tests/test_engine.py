"""The apply engine with a provider whose renders fail on purpose: a failed scene skips the
scenes chained after it, the rest go on, nothing failed enters the lock; --fail-fast stops
submitting; a task in the journal is collected, not submitted again."""

from __future__ import annotations

import asyncio
import hashlib
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from sparkspec.apply.engine import Engine
from sparkspec.state.journal import Journal
from sparkspec.state.lockfile import read_lock
from sparkspec.providers.base import RenderRequest, TaskState, TaskStatus
from sparkspec.providers.local import LocalProvider
from sparkspec.state.workspace import open_workspace

SPEC = """\
version: 1
provider: {type: local, parallelism: 1, poll: {initial: 0.01, max: 0.02}}
defaults: {resolution: 480p, frames: 29, seed: 3}
scenes:
  a: {prompt: "a red kite over a beach"}
  b: {first_frame: {scene: a}, prompt: "the kite dives"}
  c: {first_frame: {scene: b}, prompt: "the kite lands"}
  other: {prompt: "a blue boat"}
sequences:
  film: {scenes: [a, b, c]}
"""


class FailingProvider(LocalProvider):
    """The real local renderer standing in for a paid provider (its tasks are journalled and
    collected), except that the scenes named fail as the API reports it."""

    type = "paid"
    paid = True

    def __init__(self, workdir: Path, failing: set[str]) -> None:
        super().__init__(workdir)
        self.failing = failing
        self.submitted: list[str] = []

    async def submit(self, request: RenderRequest) -> TaskStatus:
        self.submitted.append(request.scene)
        if request.scene in self.failing:
            return TaskStatus(f"t-{request.scene}", TaskState.FAILED, error_code="003021098",
                              error_message="generation failed")
        return await super().submit(request)


async def rendered(provider: LocalProvider, request: RenderRequest) -> TaskStatus:
    """Submit and poll to the end, as the engine does."""
    status = await provider.submit(request)
    while status.state is TaskState.RUNNING:
        status = await provider.poll(status.task_id)
    return status


def run(tmp_path: Path, failing: set[str], *, fail_fast: bool = False,
        provider: Any = None) -> tuple[Any, Any, list[dict[str, Any]]]:
    spec = tmp_path / "project.spark.yaml"
    if not spec.exists():
        spec.write_text(SPEC)
    workspace = open_workspace(spec)
    events: list[dict[str, Any]] = []
    provider = provider or FailingProvider(workspace.state_dir / "local", failing)

    async def no_sleep(seconds: float) -> None:
        await asyncio.sleep(0)

    engine = Engine(workspace, workspace.plan(), provider, events.append, parallelism=1,
                    fail_fast=fail_fast, sleep=no_sleep)
    try:
        result = asyncio.run(engine.run())
    finally:
        workspace.close()
    return result, provider, events


@pytest.mark.slow  # over a second: the default run stays under 90 s
def test_a_failed_render_skips_its_dependents_and_the_rest_go_on(tmp_path: Path) -> None:
    result, provider, events = run(tmp_path, {"b"})
    assert sorted(result.completed) == ["a", "other"]
    assert set(result.failed) == {"b"} and "003021098" in result.failed["b"]
    assert "c" in result.skipped and "upstream b did not render" in result.skipped["c"]
    assert "c" not in provider.submitted
    assert "sequence film" in result.skipped
    assert not result.ok
    lock, _ = read_lock(tmp_path / "project.spark.lock")
    assert sorted(lock.scenes) == ["a", "other"]
    assert not (tmp_path / "renders/b.mp4").exists()
    assert events[-1]["event"] == "done" and events[-1]["failed"] == 1 and events[-1]["skipped"] == 2

    # The failed scene stays out of the lock, so the next apply plans it again.
    again, provider, _ = run(tmp_path, set())
    assert sorted(again.completed) == ["b", "c"] and again.ok
    assert sorted(provider.submitted) == ["b", "c"]


def test_fail_fast_stops_submitting(tmp_path: Path) -> None:
    result, provider, _ = run(tmp_path, {"a"}, fail_fast=True)
    assert provider.submitted == ["a"]
    assert set(result.failed) == {"a"}
    assert "other" in result.skipped and "--fail-fast" in result.skipped["other"]


def test_fail_fast_stops_submitting_after_any_failure_not_only_the_providers(tmp_path: Path) -> None:
    # a renders (paid) and cannot be installed: a folder stands where renders/a.mp4 goes.
    # With one render slot the next scene may be submitted while a is being installed, not after.
    (tmp_path / "project.spark.yaml").write_text(
        "version: 1\nprovider: {type: local}\ndefaults: {resolution: 480p, frames: 29}\nscenes:\n"
        + "".join(f"  {name}: {{prompt: scene {name}}}\n" for name in "abcde"))
    (tmp_path / "renders/a.mp4").mkdir(parents=True)
    result, provider, _ = run(tmp_path, set(), fail_fast=True)
    # b's render may finish, and c be submitted, before a's install fails on a loaded machine.
    assert provider.submitted[0] == "a" and len(provider.submitted) <= 3
    assert set(result.failed) == {"a"} and "is paid for" in result.failed["a"]
    skipped = [name for name, reason in result.skipped.items() if reason == "--fail-fast: a failed"]
    assert len(skipped) >= 2 and not set(skipped) & set(provider.submitted)


@pytest.mark.slow  # over 0.7 s: the default run stays under 90 s on a fresh clone
def test_a_task_in_the_journal_is_collected_not_submitted_again(tmp_path: Path) -> None:
    # A first apply renders `other` only (a, b, c are failed/skipped); then we pretend an apply
    # was killed after submitting `a`: its task is in the journal and done on the provider's side.
    (tmp_path / "project.spark.yaml").write_text(SPEC)
    workspace = open_workspace(tmp_path / "project.spark.yaml")
    plan = workspace.plan()
    key = plan.scene("a")
    assert key is not None and key.key is not None
    provider = LocalProvider(workspace.state_dir / "local")
    request = Engine(workspace, plan, provider, lambda e: None, 1).request(
        workspace.project.scenes["a"], _scene_key(workspace, "a"), None)
    status = asyncio.run(rendered(provider, request))
    Journal(workspace.state_dir / "journal").record(key.key, "a", "paid", status.task_id, 172800)
    workspace.close()

    counting = FailingProvider(tmp_path / ".sparkspec/local", set())
    result, _, events = run(tmp_path, set(), provider=counting)
    assert result.ok
    assert "a" not in counting.submitted
    assert {"event": "progress", "scene": "a", "task_id": status.task_id, "state": "collecting"} in events
    assert Journal(tmp_path / ".sparkspec/journal").entries() == []


def _scene_key(workspace: Any, scene_id: str) -> Any:
    from sparkspec.keys import scene_key
    from sparkspec.plan.planner import image_identity

    scene = workspace.project.scenes[scene_id]
    return scene_key(workspace.project, scene, image_identity(scene, workspace.memo))


def _journal_a(tmp_path: Path, task_id: str, submitted_at: float) -> None:
    (tmp_path / "project.spark.yaml").write_text(SPEC)
    workspace = open_workspace(tmp_path / "project.spark.yaml")
    key = workspace.plan().scene("a")
    assert key is not None and key.key is not None
    Journal(workspace.state_dir / "journal").record(key.key, "a", "paid", task_id, 3600, now=submitted_at)
    workspace.close()


@pytest.mark.slow  # a whole apply or two; the default run keeps its siblings
def test_a_journalled_task_past_its_expiry_is_asked_about_not_submitted_again(tmp_path: Path) -> None:
    """It may have finished, paid for, before it expired: the API is asked. This one it does
    not know, so the scene fails and the id stays, as for any unknown task."""
    import time

    _journal_a(tmp_path, "local-long-gone", submitted_at=time.time() - 7200)
    result, provider, events = run(tmp_path, set())
    assert "a" not in provider.submitted and "paid task local-long-gone is unknown" in result.failed["a"]
    assert {"event": "progress", "scene": "a", "task_id": "local-long-gone", "state": "collecting"} in events
    assert not any(e["event"] == "resubmitted" for e in events)
    assert [e.task_id for e in Journal(tmp_path / ".sparkspec/journal").entries()] == ["local-long-gone"]


def test_the_count_of_submissions_says_what_this_apply_sent(tmp_path: Path) -> None:
    """A task of an earlier apply that the API says did not render, then the service busy
    twice: this apply sent two creates; the message said three."""
    import time

    class Busy(FailingProvider):
        async def submit(self, request: RenderRequest) -> TaskStatus:
            self.submitted.append(request.scene)
            return TaskStatus(f"t-{len(self.submitted)}", TaskState.FAILED, error_code="003021099",
                              error_message="service unavailable")

        async def poll(self, task_id: str, locator: str | None = None) -> TaskStatus:
            return TaskStatus(task_id, TaskState.FAILED, error_code="003021099", error_message="service unavailable")

    _journal_a(tmp_path, "local-earlier", submitted_at=time.time() - 600)
    ws = open_workspace(tmp_path / "project.spark.yaml")
    busy = Busy(ws.state_dir / "local", set())
    ws.close()
    result, provider, _ = run(tmp_path, set(), provider=busy)
    assert provider.submitted.count("a") == 2
    assert "submitted 2 time(s) in this apply (2 of them again), the most it does" in result.failed["a"]


def test_a_journalled_task_the_provider_does_not_know_is_not_submitted_again(tmp_path: Path) -> None:
    """It may exist and be paid for: the scene fails naming it, and its id stays journalled."""
    import time

    _journal_a(tmp_path, "local-unknown-task", submitted_at=time.time() - 600)  # 10 min ago, within its expiry
    result, provider, events = run(tmp_path, set())
    assert {"event": "progress", "scene": "a", "task_id": "local-unknown-task", "state": "collecting"} in events
    assert "a" not in provider.submitted and "paid task local-unknown-task is unknown" in result.failed["a"]
    assert [e.task_id for e in Journal(tmp_path / ".sparkspec/journal").entries()] == ["local-unknown-task"]


class VanishingProvider(LocalProvider):
    """The local renderer, except that the first video download finds its folder gone, as when
    .sparkspec/ is deleted while an apply downloads."""

    def __init__(self, workdir: Path) -> None:
        super().__init__(workdir)
        self.vanished = 0

    async def download(self, url: str, dest: Path) -> Any:
        if self.vanished == 0 and dest.suffixes[-2:] == [".mp4", ".part"]:
            self.vanished += 1
            import shutil

            from sparkspec.errors import DiskError

            shutil.rmtree(dest.parent)
            raise DiskError.from_os(FileNotFoundError(2, "No such file or directory"), dest)
        return await super().download(url, dest)


@pytest.mark.slow  # over a second and a half: the default run stays under 90 s
def test_outputs_whose_folder_vanished_are_fetched_again_not_paid_again(tmp_path: Path) -> None:
    (tmp_path / "project.spark.yaml").write_text(SPEC)
    workspace = open_workspace(tmp_path / "project.spark.yaml")
    provider = VanishingProvider(workspace.state_dir / "local")
    workspace.close()
    result, provider, events = run(tmp_path, set(), provider=provider)
    assert provider.vanished == 1
    assert result.ok and sorted(result.completed) == ["a", "b", "c", "other"]
    assert any("fetching task" in e.get("message", "") for e in events if e["event"] == "warning")


def test_the_local_renderer_is_submitted_polled_and_reports_progress_as_the_api_is(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`submitted` came when the render had already ended, and no `progress` ever: a terminal
    showed no scene while it rendered."""
    import sparkspec.providers.local as local

    monkeypatch.setattr(local, "POLL_WAIT", 0.005)  # answer between frames, not only at the end
    (tmp_path / "project.spark.yaml").write_text(
        "version: 1\nprovider: {type: local}\ndefaults: {resolution: 480p, frames: 97}\n"
        "scenes:\n  a: {prompt: a kite}\n")
    workspace = open_workspace(tmp_path / "project.spark.yaml")
    provider = LocalProvider(workspace.state_dir / "local")
    workspace.close()
    result, _, events = run(tmp_path, set(), provider=provider)
    assert result.ok
    kinds = [e["event"] for e in events if e.get("scene") == "a"]
    assert kinds[0] == "submitted" and kinds[-1] == "completed" and "progress" in kinds
    fractions = [e["progress"] for e in events if e["event"] == "progress"]
    assert fractions == sorted(fractions) and any(0 < f < 1 for f in fractions)
    assert not (tmp_path / ".sparkspec/journal").exists() or not any((tmp_path / ".sparkspec/journal").iterdir())


@pytest.mark.slow  # over 0.7 s: the default run stays under 90 s on a fresh clone
@pytest.mark.parametrize("refused", [1, 100], ids=["once", "always"])
def test_a_cache_index_that_refuses_a_batch_still_leaves_a_lock_that_tells_the_truth(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, refused: int) -> None:
    """A full disk refused the cache index's transaction: the lock writer stopped there, so the
    apply ended with no lock at all (four scenes in renders/) and no summary. Now the lock
    names what renders/ holds, the batch is tried again (at the next write, and once more at
    the end), the tasks stay journalled until it goes in, and an index that still refuses
    fails the apply with its error after the summary."""
    from sparkspec.errors import DiskError
    from sparkspec.state.cache import Cache

    real = Cache.record_many
    refusals: list[int] = []

    def record_many(self: Cache, renders: list[Any]) -> None:
        if len(refusals) < refused:
            refusals.append(len(renders))
            raise DiskError(f"{self.directory / 'index'}: the cache index failed (database or disk is full)")
        real(self, renders)

    monkeypatch.setattr(Cache, "record_many", record_many)
    result, provider, events = run(tmp_path, set())
    assert refusals and sorted(result.completed) == ["a", "b", "c", "other"]
    assert events[-1]["event"] == "done" and events[-1]["completed"] == 4
    if refused == 1:
        assert result.ok, result.failed
    else:
        assert list(result.failed) == [str(tmp_path / ".sparkspec/cache/index")], result.failed
        assert "database or disk is full" in next(iter(result.failed.values()))
        assert events[-1]["ok"] is False
    lock = json.loads((tmp_path / "project.spark.lock").read_text())
    assert sorted(lock["scenes"]) == ["a", "b", "c", "other"]
    for record in lock["scenes"].values():
        for file in (record["video"], record["last_frame"]):
            assert hashlib.sha256((tmp_path / file["path"]).read_bytes()).hexdigest() == file["sha256"]
    monkeypatch.setattr(Cache, "record_many", real)
    ws = open_workspace(tmp_path / "project.spark.yaml")
    try:
        assert not ws.plan().has_changes
        indexed = [ws.cache.entry(r["key"]) is not None for r in lock["scenes"].values()]
        assert indexed == [refused == 1] * 4
    finally:
        ws.close()


class FolderInTheWay(LocalProvider):
    """The local renderer, which makes a folder where b's video goes as b is submitted: a
    folder that came after apply's own check of the outputs."""

    paid = True
    type = "paid"

    def __init__(self, workdir: Path, root: Path) -> None:
        super().__init__(workdir)
        self.root = root

    async def submit(self, request: RenderRequest) -> TaskStatus:
        if request.scene == "b":
            (self.root / "renders/b.mp4").mkdir(parents=True)
        return await super().submit(request)


@pytest.mark.slow  # over 0.7 s: the default run stays under 90 s on a fresh clone
def test_a_render_that_cannot_be_put_in_place_is_counted_and_said_to_be_kept(tmp_path: Path) -> None:
    """The summary said '0 tokens' for a render made (and paid for) whose output path was a
    folder, and nothing said the render waits in the cache."""
    (tmp_path / "project.spark.yaml").write_text(SPEC)
    ws = open_workspace(tmp_path / "project.spark.yaml")
    result, _, events = run(tmp_path, set(), provider=FolderInTheWay(ws.state_dir / "local", tmp_path))
    ws.close()
    assert "b" in result.failed and "is paid for: the next apply puts it in place at no new cost" in result.failed["b"], result.failed
    assert result.tokens > 0 and events[-1]["tokens"] == result.tokens
    (tmp_path / "renders/b.mp4").rmdir()
    again, provider, events = run(tmp_path, set())
    assert again.ok and provider.submitted == ["c"]  # b from the cache; c, which starts from it, renders
    assert [e["scene"] for e in events if e["event"] == "reused"] == ["b"]


def test_an_apply_without_the_api_does_not_import_the_http_client(tmp_path: Path) -> None:
    """httpx (with the rich and click its command line pulls in) is a twentieth of a second of
    start-up: an apply with the local provider, or one that only pulls from the team's remote,
    starts without it."""
    (tmp_path / "project.spark.yaml").write_text("version: 1\nprovider: {type: local}\nscenes:\n  one: {prompt: a dog}\n")
    code = ("import sys; import sparkspec.commands.apply, sparkspec.apply.engine, sparkspec.remote.applying; "
            "print('httpx' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False"]
