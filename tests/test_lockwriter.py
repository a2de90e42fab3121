"""Lock writes during apply: coalesced (all writes together a small multiple of the final lock,
not one whole lock per scene) and truthful at every write: each record written names files
that are in renders/ exactly as it says, even while an apply overwrites and deletes outputs."""

from __future__ import annotations

import asyncio
import errno
import threading
import hashlib
from pathlib import Path
from typing import Any

import pytest

from fakeapi import FakeSparkAPI
from sparkspec.apply import lockwriter
from sparkspec.apply.engine import ApplyResult, Engine
from sparkspec.plan.model import PlanOptions
from sparkspec.providers import make_provider
from sparkspec.providers.local import LocalProvider
from sparkspec.state.lockfile import Lock, read_lock
from sparkspec.state.workspace import open_workspace

def spec(take: str, count: int, provider: str = "local") -> str:
    lines = ["version: 1", f"provider: {{type: {provider}, parallelism: 4, poll: {{initial: 0.01, max: 0.05}}}}",
             "defaults: {resolution: 480p, frames: 29}", "scenes:"]
    lines += [f'  s{i:02d}: {{prompt: "shot {i}, {take}"}}' for i in range(count)]
    return "\n".join(lines) + "\n"


def apply(root: Path, api: FakeSparkAPI | None = None, provider: Any = None,
          options: PlanOptions = PlanOptions()) -> ApplyResult:
    workspace = open_workspace(root / "project.spark.yaml")
    if provider is None and api is not None:
        provider = make_provider(workspace.project.provider, workspace.state_dir,
                                 {"SPARK_API_KEY": api.api_key, "SPARK_BASE_URL": api.base_url})
    provider = provider or LocalProvider(workspace.state_dir / "local")
    engine = Engine(workspace, workspace.plan(options), provider, lambda event: None, parallelism=4)

    async def run() -> ApplyResult:
        try:
            return await engine.run()
        finally:
            await provider.aclose()

    try:
        return asyncio.run(run())
    finally:
        workspace.close()


@pytest.fixture(scope="module")
def api() -> Any:
    with FakeSparkAPI(api_key="sk-lock", render="template") as fake:  # one clip per shape: fast
        yield fake


@pytest.fixture
def writes(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, list[str]]]:
    """Every lock write: its size, and what in it did not match renders/ at that moment."""
    seen: list[tuple[int, list[str]]] = []
    real = lockwriter.write_lock

    def checked(path: Path, lock: Lock) -> None:
        lies = []
        for sid, record in lock.scenes.items():
            for file in (record.video, record.last_frame):
                target = path.parent / file.path
                if not target.exists() or hashlib.sha256(target.read_bytes()).hexdigest() != file.sha256:
                    lies.append(f"{sid}: {file.path}")
        seen.append((len(lock.to_text()), lies))
        real(path, lock)

    monkeypatch.setattr(lockwriter, "write_lock", checked)
    return seen


@pytest.mark.slow  # over a second and a half: the default run stays under 90 s
def test_lock_writes_are_coalesced(tmp_path: Path, api: FakeSparkAPI, writes: list[tuple[int, list[str]]],
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(lockwriter, "MIN_BATCH", 1)  # the schedule of 5,000 scenes, on 64
    (tmp_path / "project.spark.yaml").write_text(spec("take 1", 64, "spark"))
    assert apply(tmp_path, api).ok
    final = len((tmp_path / "project.spark.lock").read_text())
    # 1 record, 2, then the final 64 (not 64 writes of a growing lock; 4 would be past a
    # thirty-second of the records expected at the end, where only the final write is made)
    assert [size for size, _ in writes][-1] == final and len(writes) == 3
    assert sum(size for size, _ in writes) <= 1.0625 * final
    assert all(not lies for _, lies in writes)


@pytest.mark.slow  # over 0.7 s: the default run stays under 90 s on a fresh clone
def test_a_long_apply_writes_its_progress_past_the_early_writes(
        tmp_path: Path, api: FakeSparkAPI, writes: list[tuple[int, list[str]]],
        monkeypatch: pytest.MonkeyPatch) -> None:
    # Renders of minutes: each MIN_BATCH scenes finish after the last write is STALE_AFTER old.
    monkeypatch.setattr(lockwriter, "STALE_AFTER", 0.0)
    (tmp_path / "project.spark.yaml").write_text(spec("take 1", 20, "spark"))
    assert apply(tmp_path, api).ok
    final = len((tmp_path / "project.spark.lock").read_text())
    sizes = [size for size, _ in writes]
    assert len(writes) == 3 and sizes == sorted(sizes) and sizes[-1] == final, sizes  # 8, 16, 20
    assert all(not lies for _, lies in writes)


@pytest.mark.slow
def test_the_lock_never_names_a_file_that_is_not_so_while_apply_overwrites_and_deletes(
        tmp_path: Path, writes: list[tuple[int, list[str]]]) -> None:
    (tmp_path / "project.spark.yaml").write_text(spec("take 1", 8))
    assert apply(tmp_path).ok
    final = len((tmp_path / "project.spark.lock").read_text())
    assert all(not lies for _, lies in writes)
    # A new take overwrites every output and drops two scenes: the old records leave the
    # file before the first output is touched, and the new ones come in as they land.
    writes.clear()
    (tmp_path / "project.spark.yaml").write_text(spec("take 2", 6))
    assert apply(tmp_path).ok
    assert writes[0][0] < final / 4  # first: every record withheld
    assert all(not lies for _, lies in writes), [lies for _, lies in writes if lies]
    lock, _ = read_lock(tmp_path / "project.spark.lock")
    assert len(lock.scenes) == 6


def test_a_withheld_record_whose_render_failed_comes_back(tmp_path: Path, api: FakeSparkAPI,
                                                          writes: list[tuple[int, list[str]]]) -> None:
    (tmp_path / "project.spark.yaml").write_text(spec("take 1", 3, "spark"))
    assert apply(tmp_path, api).ok
    before, _ = read_lock(tmp_path / "project.spark.lock")
    (tmp_path / "project.spark.yaml").write_text(spec("take 1", 3, "spark").replace("shot 1, take 1", "shot 1, x"))
    api.outcome("failed", code="003021098", message="generation failed")
    writes.clear()
    result = apply(tmp_path, api)
    assert set(result.failed) == {"s01"}
    after, _ = read_lock(tmp_path / "project.spark.lock")
    assert after == before and all(not lies for _, lies in writes)
    # Nothing of s01 was touched, so it never left the file: an apply killed while a render runs
    # leaves the lock as it was (a teammate or CI with the lock and renders/ pays nothing).
    assert all(size == len(before.to_text()) for size, _ in writes)


def test_records_leave_the_file_only_when_the_first_output_is_about_to_change(
        tmp_path: Path, api: FakeSparkAPI, writes: list[tuple[int, list[str]]]) -> None:
    (tmp_path / "project.spark.yaml").write_text(spec("take 1", 3, "spark"))
    assert apply(tmp_path, api).ok
    before, _ = read_lock(tmp_path / "project.spark.lock")
    (tmp_path / "project.spark.yaml").write_text(spec("take 1", 3, "spark").replace("take 1", "take 2"))
    writes.clear()
    result = apply(tmp_path, api)
    assert result.ok and all(not lies for _, lies in writes)
    assert writes and writes[0][0] < len(before.to_text())  # withheld once the first render arrived


@pytest.mark.slow  # over 0.7 s: the default run stays under 90 s on a fresh clone
def test_lock_writes_are_made_off_the_event_loop(tmp_path: Path, api: FakeSparkAPI,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    # The fsyncs of a write (cache index, journal, lock) held up every task's next step,
    # a create's journal entry among them, when they ran on the loop's thread.
    threads: list[str] = []
    real = lockwriter.write_lock

    def noted(path: Path, lock: Lock) -> None:
        threads.append(threading.current_thread().name)
        real(path, lock)

    monkeypatch.setattr(lockwriter, "write_lock", noted)
    monkeypatch.setattr(lockwriter, "MIN_BATCH", 1)  # a write on the way: 1 record, then 40
    (tmp_path / "project.spark.yaml").write_text(spec("take 1", 40, "spark"))
    assert apply(tmp_path, api).ok
    assert len(threads) == 2 and all(name.startswith("sparkspec-lock") for name in threads), threads


@pytest.mark.slow  # over 0.7 s: the default run stays under 90 s on a fresh clone
def test_a_failed_lock_write_stops_the_writes_after_it_and_fails_the_apply(
        tmp_path: Path, api: FakeSparkAPI, monkeypatch: pytest.MonkeyPatch) -> None:
    real, made = lockwriter.write_lock, []

    def full(path: Path, lock: Lock) -> None:
        if made:
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        made.append(len(lock.scenes))
        real(path, lock)

    monkeypatch.setattr(lockwriter, "write_lock", full)
    monkeypatch.setattr(lockwriter, "STALE_AFTER", 0.0)  # a write every 8 records
    (tmp_path / "project.spark.yaml").write_text(spec("take 1", 20, "spark"))
    creates = api.total_creates
    failed = apply(tmp_path, api)  # the apply's failure, after its summary (it was raised past it)
    lock_path = str(tmp_path / "project.spark.lock")
    assert not failed.ok and list(failed.failed) == [lock_path], failed.failed
    assert failed.failed[lock_path].startswith(f"{lock_path}: No space left on device; free some disk space")
    lock, _ = read_lock(tmp_path / "project.spark.lock")
    assert made == [8] and len(lock.scenes) == 8  # the one write that was made, and nothing after it
    paid = api.total_creates - creates
    monkeypatch.setattr(lockwriter, "write_lock", real)  # the disk has room again: nothing is paid twice
    assert apply(tmp_path, api).ok
    assert api.total_creates - creates == paid == 20
    lock, _ = read_lock(tmp_path / "project.spark.lock")
    assert len(lock.scenes) == 20


def test_a_take_whose_path_a_new_pick_overwrote_never_comes_back(tmp_path: Path, api: FakeSparkAPI,
                                                                 writes: list[tuple[int, list[str]]],
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """Pick 2 -> 1: take 1 goes to renders/s.mp4, where take 2's record points until take 2
    moves. Ctrl-C while take 1 was being copied (the copy, on its thread, still lands) put take
    2's record back at the apply's end, naming a file that now holds take 1."""
    lantern = ("version: 1\nprovider: {type: spark, parallelism: 1, poll: {initial: 0.01, max: 0.05}}\n"
               "defaults: {resolution: 480p, frames: 29}\nscenes:\n"
               '  s: {prompt: "a lantern at dusk", takes: 2, pick: PICK}\n')
    monkeypatch.setattr(api, "unique", True)  # two takes, two clips
    (tmp_path / "project.spark.yaml").write_text(lantern.replace("PICK", "2"))
    assert apply(tmp_path, api).ok
    (tmp_path / "project.spark.yaml").write_text(lantern.replace("PICK", "1"))
    real = Engine._materialize

    def interrupted_while_copying(self: Engine, scene: Any, take: int, cached: Any) -> None:
        real(self, scene, take, cached)
        if take == 1:
            raise asyncio.CancelledError  # as Ctrl-C reaches the apply while the copy finishes

    monkeypatch.setattr(Engine, "_materialize", interrupted_while_copying)
    writes.clear()
    with pytest.raises(asyncio.CancelledError):
        apply(tmp_path, api)
    assert writes and all(not lies for _, lies in writes), writes


def test_a_replace_stopped_while_its_re_roll_is_put_in_place_is_installed_by_the_next_replace(
        tmp_path: Path, api: FakeSparkAPI, monkeypatch: pytest.MonkeyPatch) -> None:
    """The re-roll was downloaded and indexed, and Ctrl-C came while it was copied into renders/:
    the lock named neither render (withheld), and the next `--replace` paid for a third."""
    monkeypatch.setattr(api, "unique", True)
    (tmp_path / "project.spark.yaml").write_text(spec("take 1", 1, "spark"))
    assert apply(tmp_path, api).ok
    creates = api.total_creates
    real = Engine._materialize
    calls = []

    def stopped_while_copying(self: Engine, scene: Any, take: int, cached: Any) -> None:
        calls.append(cached.task_id)
        real(self, scene, take, cached)
        if len(calls) == 1:
            raise asyncio.CancelledError

    monkeypatch.setattr(Engine, "_materialize", stopped_while_copying)
    with pytest.raises(asyncio.CancelledError):
        apply(tmp_path, api, options=PlanOptions(replace=("s00",)))
    assert api.total_creates == creates + 1
    monkeypatch.setattr(Engine, "_materialize", real)
    result = apply(tmp_path, api, options=PlanOptions(replace=("s00",)))
    assert result.ok and result.reused == ["s00"] and api.total_creates == creates + 1
    lock, _ = read_lock(tmp_path / "project.spark.lock")
    assert lock.scenes["s00"].task_id == calls[0]  # the re-roll, put in place
