"""Every path that submits a scene again is bounded, counted and reported, against the fake
gateway on loopback: a task the API never shows is created once and kept in the journal;
003021099 and expired tasks are submitted again at most twice, each time reported; a
damaged journal entry is reported and left, never silently replaced by a new task."""

from __future__ import annotations

import asyncio
import errno
import io
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from fakeapi import FakeSparkAPI
from mounts import read_only
from sparkspec.apply.engine import ApplyResult, Engine
from sparkspec.apply.tasks import TaskRunner
from sparkspec.apply.progress import PlainReporter
from sparkspec.plan.model import PlanOptions
from sparkspec.providers import make_provider
from sparkspec.state.journal import Journal
from sparkspec.state.lockfile import read_lock
from sparkspec.state.workspace import open_workspace

SPEC = """\
version: 1
provider: {type: spark, parallelism: 2, poll: {initial: 0.5, max: 4}}
defaults: {resolution: 480p, frames: 29, seed: 11}
scenes:
  a: {prompt: "a heron stands in reeds"}
  b: {prompt: "a heron takes flight"}
"""


class Clock:
    """Wall and monotonic time that move only when the engine sleeps: minutes pass at once."""

    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += seconds
        await asyncio.sleep(0)


@pytest.fixture(scope="module")
def gateway() -> Any:
    with FakeSparkAPI(api_key="sk-money", render="template") as fake:  # one clip per shape, made once
        yield fake


@pytest.fixture
def api(gateway: FakeSparkAPI) -> FakeSparkAPI:
    gateway.unknown_tasks = False
    gateway.outcomes.clear()
    gateway.faults.clear()  # one a test left unspent (times=100) would meet the next test
    gateway.reset_counters()
    return gateway


def apply(root: Path, api: FakeSparkAPI, *, replace: tuple[str, ...] = (), reporter: Any = None,
          environ: dict[str, str] | None = None, fetch_workers: int = 0,
          during: Callable[[Engine], Awaitable[None]] | None = None) -> tuple[ApplyResult, list[dict[str, Any]]]:
    """The engine on the project at `root` (SPEC unless it has one) against `api`; `environ`:
    the provider's environment (the generation protocol's key and URL by default);
    `fetch_workers`: processes that fetch the outputs; `during`: run beside the apply."""
    spec = root / "project.spark.yaml"
    if not spec.exists():
        spec.write_text(SPEC)
    workspace = open_workspace(spec)
    environ = environ or {"SPARK_API_KEY": api.api_key, "SPARK_BASE_URL": api.base_url}
    provider = make_provider(workspace.project.provider, workspace.state_dir, environ)
    events: list[dict[str, Any]] = []
    clock = Clock()

    def emit(event: dict[str, Any]) -> None:
        events.append(event)
        if reporter is not None:
            reporter(event)

    engine = Engine(workspace, workspace.plan(PlanOptions(replace=replace)), provider, emit, parallelism=2,
                    sleep=clock.sleep, wall_clock=clock, monotonic=clock, fetch_workers=fetch_workers)

    async def run() -> ApplyResult:
        beside = asyncio.create_task(during(engine)) if during is not None else None
        try:
            return await engine.run()
        finally:
            if beside is not None:
                beside.cancel()
            await provider.aclose()

    try:
        return asyncio.run(run()), events
    finally:
        workspace.close()


@pytest.mark.slow  # over a second and a half: the default run stays under 90 s
def test_a_task_the_api_never_shows_is_created_once_kept_and_collected_later(tmp_path: Path,
                                                                            api: FakeSparkAPI) -> None:
    api.unknown_tasks = True  # every query answers 404
    result, events = apply(tmp_path, api)
    assert api.total_creates == 2 and sorted(api.creates_by_prompt().values()) == [1, 1]
    assert set(result.failed) == {"a", "b"}
    journal = {e.scene: e.task_id for e in Journal(tmp_path / ".sparkspec/journal").entries()}
    for scene in ("a", "b"):
        message = result.failed[scene]
        assert f"task {journal[scene]} is unknown to the API" in message
        assert "not submitted again" in message and f"--replace {scene}" in message
    polls = [e for e in events if e["event"] == "progress"]
    # It kept asking, with backoff (0.5 s doubling to 4 s over the 60 s grace: about 20 a task),
    # not every poll.initial/4 as the create's progress predicted (480 a task).
    assert 8 <= api.requests["query"] <= 2 * 25 and len(polls) == 0, api.requests["query"]

    api.unknown_tasks = False  # the tasks show up: the next apply collects them, at no new cost
    again, events = apply(tmp_path, api)
    assert again.ok and sorted(again.completed) == ["a", "b"] and api.total_creates == 2
    assert sorted(e["task_id"] for e in events if e.get("state") == "collecting") == sorted(journal.values())
    assert Journal(tmp_path / ".sparkspec/journal").entries() == []


def test_replace_submits_afresh_what_the_api_does_not_know(tmp_path: Path, api: FakeSparkAPI) -> None:
    api.unknown_tasks = True
    apply(tmp_path, api)
    api.unknown_tasks = False
    result, _ = apply(tmp_path, api, replace=("a",))
    assert result.ok
    assert api.creates_by_prompt() == {"a heron stands in reeds": 2, "a heron takes flight": 1}


def test_a_busy_service_is_submitted_again_twice_at_most_each_time_reported(tmp_path: Path,
                                                                           api: FakeSparkAPI) -> None:
    api.outcome("failed", code="003021099", message="service unavailable", times=6)
    plain = io.StringIO()
    result, events = apply(tmp_path, api, reporter=PlainReporter(plain))
    assert api.total_creates == 6  # 1 + 2 per scene
    assert set(result.failed) == {"a", "b"} and "003021099" in result.failed["a"]
    assert "submitted 3 time(s) in this apply (2 of them again), the most it does" in result.failed["a"]
    again = [e for e in events if e["event"] == "resubmitted"]
    assert sorted((e["scene"], e["count"]) for e in again) == [("a", 1), ("a", 2), ("b", 1), ("b", 2)]
    assert all(e["reason"] == "the service was busy (003021099)" and e["limit"] == 2 for e in again)
    lines = [line for line in plain.getvalue().splitlines() if "submitting again" in line]
    assert len(lines) == 4 and lines[0].endswith("1 of at most 2 in this apply")


def test_an_expired_task_is_submitted_again_and_reported(tmp_path: Path, api: FakeSparkAPI) -> None:
    api.outcome("expired", times=1)
    result, events = apply(tmp_path, api)
    assert result.ok and api.total_creates == 3
    [again] = [e for e in events if e["event"] == "resubmitted"]
    assert again["reason"] == "the task expired unrendered" and again["count"] == 1


def test_a_damaged_journal_entry_is_reported_and_left_in_place(tmp_path: Path, api: FakeSparkAPI) -> None:
    (tmp_path / "project.spark.yaml").write_text(SPEC)
    workspace = open_workspace(tmp_path / "project.spark.yaml")
    change = workspace.plan().scene("a")
    workspace.close()
    assert change is not None and change.key is not None
    entry = tmp_path / ".sparkspec/journal" / f"{change.key}.json"
    entry.parent.mkdir(parents=True)
    entry.write_text('{"key": "' + change.key + '", "scene": "a", "provider": "spark", "task_')  # torn

    result, _ = apply(tmp_path, api)
    assert set(result.failed) == {"a"} and sorted(result.completed) == ["b"]
    assert result.failed["a"].startswith(f"{entry}: damaged journal entry")
    assert "--replace a" in result.failed["a"]
    assert api.creates_by_prompt() == {"a heron takes flight": 1}  # nothing paid for a
    assert entry.read_text().endswith('"task_')  # left as it was

    result, _ = apply(tmp_path, api, replace=("a",))
    assert result.ok and not entry.exists()
    assert api.creates_by_prompt() == {"a heron stands in reeds": 1, "a heron takes flight": 1}


LOCAL = """\
version: 1
provider: {type: local}
defaults: {resolution: 480p, frames: 29, seed: 3}
scenes:
  a: {prompt: "a {{ animal }} on a fence"}
  b: {prompt: "a gate swings"}
"""


SIX = SPEC.split("scenes:")[0] + "scenes:\n" + "".join(f'  s{i}: {{prompt: "shot {i} of six"}}\n' for i in range(6))


def test_a_journal_that_cannot_take_entries_stops_the_apply_before_it_pays(tmp_path: Path,
                                                                           api: FakeSparkAPI) -> None:
    (tmp_path / "project.spark.yaml").write_text(SIX)
    (tmp_path / ".sparkspec/journal").mkdir(parents=True)
    with read_only(tmp_path / ".sparkspec/journal"):
        result, events = apply(tmp_path, api)
    assert api.total_creates == 0  # was 6: each created, paid for, then failed on its journal entry
    assert len(result.failed) == 1 and "Read-only file system" in next(iter(result.failed.values()))
    assert len(result.skipped) == 5
    assert all("not submitted: the journal cannot be written (Read-only file system)" in r
               for r in result.skipped.values())

    again, _ = apply(tmp_path, api)
    assert again.ok and api.total_creates == 6


def test_a_task_the_full_disk_kept_out_of_the_journal_goes_in_when_space_comes_back(
        tmp_path: Path, api: FakeSparkAPI, monkeypatch: pytest.MonkeyPatch) -> None:
    """A full disk refused a's journal entry after its create (paid), then its download: the
    id was only in a warning, and the next apply paid for a again. Its failed download gave the
    space back; the entry goes in then, and the next apply collects the task."""
    real = Journal.put
    refused: list[str] = []

    def put(self: Journal, entry: Any) -> None:
        if entry.scene == "a" and not refused:
            refused.append(entry.key)
            raise OSError(errno.ENOSPC, "No space left on device", str(self.directory / f"{entry.key}.json"))
        real(self, entry)

    monkeypatch.setattr(Journal, "put", put)
    real_deliver = TaskRunner.deliver

    async def deliver(self: TaskRunner, request: Any, key: Any, status: Any) -> Any:
        if request.scene == "a":  # its download met the full disk too: nothing collected
            raise self.failure("a", f"{self.tmp_dir}/a.mp4.part: No space left on device")
        return await real_deliver(self, request, key, status)

    monkeypatch.setattr(TaskRunner, "deliver", deliver)
    result, events = apply(tmp_path, api)
    assert list(result.failed) == ["a"] and result.completed == ["b"], result.failed
    warnings = [e["message"] for e in events if e["event"] == "warning" and e.get("scene") == "a"]
    assert any("the journal could not record it" in w for w in warnings), warnings
    assert any("is in the journal after all" in w for w in warnings), warnings
    creates = api.total_creates
    monkeypatch.setattr(TaskRunner, "deliver", real_deliver)
    again, _ = apply(tmp_path, api)
    assert again.ok and api.total_creates == creates  # a's task collected, not paid again


@pytest.mark.slow  # over 0.7 s: the default run stays under 90 s on a fresh clone
def test_sparkspec_folder_deleted_during_the_apply_fails_it_and_keeps_the_running_tasks(
        tmp_path: Path, api: FakeSparkAPI) -> None:
    """`.sparkspec/` deleted while tasks render: the apply went on and ended with exit 0 and no
    word, and after a Ctrl-C (or a kill) the next apply paid for the running tasks again."""
    import shutil

    async def delete_then_interrupt(engine: Engine) -> None:
        journal = tmp_path / ".sparkspec" / "journal"
        while len(Journal(journal).keys()) < 2:  # both tasks created, paid, journalled
            await asyncio.sleep(0.01)
        shutil.rmtree(tmp_path / ".sparkspec")
        engine.journal_vanished()  # as Ctrl-C does (commands.apply._drive) before naming what runs
        # What a Ctrl-C or a kill now would leave for the next apply to collect:
        rewritten.extend(sorted(e.scene for e in Journal(journal).entries()))

    rewritten: list[str] = []

    api.latency = 1.0  # still rendering when the folder goes (real seconds: the fake's clock is the wall's)
    try:
        result, events = apply(tmp_path, api, during=delete_then_interrupt)
    finally:
        api.latency = 0.0
    state = str(tmp_path / ".sparkspec")
    assert list(result.failed) == [state] and "was deleted while the apply ran" in result.failed[state]
    assert "the 2 task(s) it had not collected were journalled again" in result.failed[state]
    assert [e for e in events if e["event"] == "failed"] == [{"event": "failed", "error": result.failed[state]}]
    assert rewritten == ["a", "b"]
    assert sorted(result.completed) == ["a", "b"] and api.total_creates == 2  # collected after all
    assert Journal(tmp_path / ".sparkspec/journal").entries() == []


def test_a_file_where_the_journals_folder_goes_is_named_once_and_nothing_is_paid(tmp_path: Path,
                                                                                  api: FakeSparkAPI) -> None:
    (tmp_path / "project.spark.yaml").write_text(SIX)
    (tmp_path / ".sparkspec").mkdir()
    (tmp_path / ".sparkspec/journal").write_text("not a folder")
    result, _ = apply(tmp_path, api)
    assert api.total_creates == 0
    assert len(result.failed) == 1 and len(result.skipped) == 5  # was six 'damaged journal entry' failures
    assert "journal" in next(iter(result.failed.values()))


def test_a_task_the_journal_cannot_record_is_collected_and_no_other_is_submitted(
        tmp_path: Path, api: FakeSparkAPI, monkeypatch: pytest.MonkeyPatch) -> None:
    from sparkspec.state.heldio import SectorLog

    (tmp_path / "project.spark.yaml").write_text(SIX)
    append = SectorLog.append

    checked: list[bool] = []

    def full(self: SectorLog, data: bytes) -> int:
        if not checked:  # the apply's check of the log passes: the disk fills up after it
            checked.append(True)
            return append(self, data)
        raise OSError(28, "No space left on device", str(self.path))

    monkeypatch.setattr(SectorLog, "append", full)
    result, events = apply(tmp_path, api)
    # Two creates were under way at once (parallelism 2): both are paid for, and both collected.
    assert api.total_creates == 2 and sorted(result.completed) == sorted(
        e["scene"] for e in events if e["event"] == "submitted")
    warned = [e for e in events if e["event"] == "warning"]
    assert len(warned) == 2 and all(f"task {e['task_id']} was created" in e["message"] and
                                    "No space left on device" in e["message"] for e in warned)
    assert len(result.skipped) == 4 and not result.failed
    monkeypatch.setattr(SectorLog, "append", append)
    again, _ = apply(tmp_path, api)
    assert again.ok and api.total_creates == 6 and sorted(again.completed) == sorted(result.skipped)


@pytest.mark.parametrize("flags", [
    ["--provider", "spark"], ["--var", "animal=owl"], ["--var-file", "other.yaml"], ["--target", "b"],
    ["--replace", "b"], ["-f", "other.spark.yaml"],
])
def test_a_saved_plan_refuses_options_it_was_not_made_with(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                           flags: list[str]) -> None:
    from cli_runner import run_main

    (tmp_path / "project.spark.yaml").write_text(LOCAL)
    (tmp_path / "other.spark.yaml").write_text(LOCAL)
    (tmp_path / "other.yaml").write_text("animal: owl\n")
    code, _, err = run_main(["plan", "--var", "animal=cat", "--target", "a", "--out", "saved.plan"], tmp_path,
                            monkeypatch)
    assert code == 0, err
    code, out, err = run_main(["apply", "saved.plan", *flags], tmp_path, monkeypatch)
    assert code == 1 and "saved.plan" in err and flags[0] in err and "Traceback" not in err
    assert not (tmp_path / "renders").exists() and not (tmp_path / "project.spark.lock").exists()


def test_a_saved_plan_takes_options_equal_to_those_it_was_made_with(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    from cli_runner import run_main

    (tmp_path / "project.spark.yaml").write_text(LOCAL)
    assert run_main(["plan", "--var", "animal=cat", "--target", "a", "--out", "saved.plan"], tmp_path,
                    monkeypatch)[0] == 0
    code, out, err = run_main(["apply", "saved.plan", "--var", "animal=cat", "--target", "a",
                               "-f", "project.spark.yaml", "--json"], tmp_path, monkeypatch)
    assert code == 0, err
    assert (tmp_path / "renders/a.mp4").exists() and not (tmp_path / "renders/b.mp4").exists()


@pytest.mark.parametrize("flags", [["--var", "animal=cat"], ["--provider", "local"], ["--var-file", "cat.yaml"]])
def test_a_saved_plan_takes_options_whose_value_is_the_plans_though_it_was_made_without_them(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, flags: list[str]) -> None:
    # The spec's own vars say cat and its provider is local: the value equals the plan's (terraform).
    from cli_runner import run_main

    (tmp_path / "project.spark.yaml").write_text(LOCAL.replace("provider:", "vars: {animal: cat}\nprovider:"))
    (tmp_path / "cat.yaml").write_text("animal: cat\n")
    assert run_main(["plan", "--target", "a", "--out", "saved.plan"], tmp_path, monkeypatch)[0] == 0
    code, out, err = run_main(["apply", "saved.plan", *flags, "--json"], tmp_path, monkeypatch)
    assert code == 0, err
    assert (tmp_path / "renders/a.mp4").exists()
    code, _, err = run_main(["apply", "saved.plan", "--var", "animal=owl"], tmp_path, monkeypatch)
    assert code == 1 and "--var animal=owl" in err


def test_a_saved_plan_takes_the_same_ids_in_any_order_or_as_the_plan_prints_them(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from cli_runner import run_main

    (tmp_path / "project.spark.yaml").write_text(LOCAL)
    assert run_main(["plan", "--var", "animal=cat", "--target", "a", "--target", "b", "--replace", "b",
                     "--out", "saved.plan"], tmp_path, monkeypatch)[0] == 0
    code, out, err = run_main(["apply", "saved.plan", "--target", "scene.b", "--target", "a",
                               "--replace", "scene.b", "--json"], tmp_path, monkeypatch)
    assert code == 0, err
    assert (tmp_path / "renders/a.mp4").exists() and (tmp_path / "renders/b.mp4").exists()


def test_a_saved_plan_from_a_newer_sparkspec_is_refused_with_upgrade(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    from cli_runner import run_main

    (tmp_path / "project.spark.yaml").write_text(LOCAL)
    assert run_main(["plan", "--var", "animal=cat", "--out", "saved.plan"], tmp_path, monkeypatch)[0] == 0
    saved = tmp_path / "saved.plan"
    saved.write_text(saved.read_text().replace('"format_version": "1"', '"format_version": "2"'))
    code, out, err = run_main(["apply", "saved.plan", "--auto-approve"], tmp_path, monkeypatch)
    assert code == 1 and err.startswith("error: saved.plan was made by a newer sparkspec (plan format 2")
    assert "upgrade sparkspec" in err
    assert not (tmp_path / "renders").exists() and not (tmp_path / "project.spark.lock").exists()


@pytest.mark.slow  # over 0.7 s: the default run stays under 90 s on a fresh clone
def test_a_saved_plan_applies_from_another_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The plan named its spec and var files from the folder `plan` ran in, and apply read
    them from its own: `apply proj/saved.plan` found no project.spark.yaml, and `-f` naming the
    same spec was refused as another."""
    from cli_runner import run_main

    project = tmp_path / "proj"
    project.mkdir()
    (project / "project.spark.yaml").write_text(LOCAL)
    (project / "cat.yaml").write_text("animal: cat\n")
    code, _, err = run_main(["plan", "--var-file", "cat.yaml", "--target", "a", "--out", "saved.plan"], project,
                            monkeypatch)
    assert code == 0, err
    code, out, err = run_main(["apply", "proj/saved.plan", "-f", "proj/project.spark.yaml",
                               "--var-file", "proj/cat.yaml", "--json"], tmp_path, monkeypatch)
    assert code == 0, err
    assert (project / "renders/a.mp4").exists() and not (tmp_path / "renders").exists()
    # made from the parent with -f, applied inside with -f ./
    code, _, err = run_main(["plan", "-f", "proj/project.spark.yaml", "--target", "a", "--target", "b",
                             "--var", "animal=cat", "--out", "proj/other.plan"], tmp_path, monkeypatch)
    assert code == 0, err
    code, out, err = run_main(["apply", "other.plan", "-f", "./project.spark.yaml", "--json"], project, monkeypatch)
    assert code == 0, err
    assert (project / "renders/b.mp4").exists()
    code, _, err = run_main(["apply", "other.plan", "-f", "cat.yaml"], project, monkeypatch)
    assert code == 1 and "the plan was made from project.spark.yaml, not cat.yaml" in err, err


def test_an_entry_left_for_a_render_the_cache_holds_goes_at_the_next_apply(tmp_path: Path, api: FakeSparkAPI) -> None:
    """A kill between the cache index's commit and the journal's forget left the entry of a task
    whose render the cache holds: it was listed as uncollected for good."""
    (tmp_path / "project.spark.yaml").write_text(SPEC)
    result, _ = apply(tmp_path, api)
    assert result.ok and api.total_creates == 2
    lock, _ = read_lock(tmp_path / "project.spark.lock")
    journal = Journal(tmp_path / ".sparkspec/journal")
    journal.record(lock.scenes["a"].key, "a", "spark", lock.scenes["a"].task_id, 172800)  # as a kill left it
    pending = journal.record("ef" * 32, "gone", "spark", "cgt-elsewhere", 172800)  # no render of it anywhere
    (tmp_path / "project.spark.yaml").write_text(SPEC.replace("takes flight", "lands"))  # something to apply
    result, _ = apply(tmp_path, api)
    assert result.ok and api.total_creates == 3
    assert Journal(tmp_path / ".sparkspec/journal").entries() == [pending]  # a task not rendered stays
