"""The lock during an apply: kept in memory, written to disk coalesced, never a lie.

Rewriting the whole lock after every scene costs bytes in the square of the scene
count (1,600 scenes wrote 1.85 GB for a 1.6 MB lock). Here a write happens once as
many records changed as the last write held, and at least MIN_BATCH, while the lock
written holds at most a thirty-second of the records the apply expects to end with (EARLY_SHARE),
and once at the end: all writes together are at most 1.0625 times the final lock. Past that
share, a write is also made when STALE_AFTER seconds have gone by since the last one and
MIN_BATCH records changed: a long apply (renders take minutes) keeps its progress in the
lock and the cache index, which a write commits, at a cost that only shows next to renders
that small (an apply of zero-latency renders ends first). Between writes the lock on disk may lag
behind renders/ (a finished scene not listed yet: the cache has it, the next plan calls
it `reuse`), but it never names a file that is not as it says: records of outputs this
apply may overwrite, move or delete are withheld from the file, in one write made when the
first output is about to change (not at the start: an apply killed while its first renders
are still running leaves the lock as it was), until their new record replaces them. A withheld record whose files
were never touched (its render failed) goes back in at the end. A scene's takes are
withheld and put one by one: the file lists the takes that are as it says.

A write is made on the event loop's thread as a snapshot (which records, which renders to
index first) and carried out on a thread of its own, in order: the cache
index transaction, the journal entries it makes redundant, then the lock file, each fsync'd.
Done on the loop, those fsyncs held up every task's next step, a create's journal entry
among them, for 30-170 ms a write. A snapshot only names files already in place, and no
file a snapshot names changes later in the same apply (a record's files are withheld before
they are touched), so the file is as true when written as when taken. A failed write
stops the writes after it and is raised at the next one, or by `close`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor

from sparkspec.errors import SparkspecError
from sparkspec.state.unsynced import UNSYNCED
from sparkspec.state.lockfile import Lock, SceneRecord, SequenceRecord, scene_entry, write_lock
from sparkspec.state.workspace import Workspace


MIN_BATCH = 8  # records: a write (and a cache index transaction) costs pages, whatever it holds
STALE_AFTER = 300.0  # seconds: past the early writes, the longest the lock lags while scenes finish
# The early writes end when the lock written would hold more than this share of the records
# the apply ends with. Each write is the whole lock, so they add up to twice that share of it:
# at a quarter, 5,000 scenes wrote their lock 1.41 times (7.0 MB for a 5.0 MB lock); at a
# sixteenth, 1.10 times; at a thirty-second, 1.05. Progress past it is the STALE_AFTER writes'
# (the cache keeps every finished render meanwhile: after a crash the next plan calls it `reuse`).
EARLY_SHARE = 1 / 32

Item = tuple[str, str, int]  # ("scene", id, take) or ("sequence", name, 0)


class LockWriter:
    def __init__(self, workspace: Workspace, before_write: Callable[[], tuple[Callable[[], None], bool]],
                 expected: int | None = None) -> None:
        self.workspace = workspace
        # Records the lock should hold at the end: past EARLY_SHARE of them, only the final
        # write (and one when the last is STALE_AFTER old).
        self.early_limit = expected * EARLY_SHARE if expected is not None else float("inf")
        # Called when a write is taken; the call it returns runs before the lock file is written
        # (what must be on disk before the lock may name it), and whether files written
        # without an fsync must be flushed before that call (a task's render among them).
        self.before_write = before_write
        self.executor = ThreadPoolExecutor(1, thread_name_prefix="sparkspec-lock")
        self.pending: Future[None] | None = None
        self.scenes: dict[str, SceneRecord] = dict(workspace.lock.scenes)
        self.sequences: dict[str, SequenceRecord] = dict(workspace.lock.sequences)
        self.withheld: set[Item] = set()
        self.withheld_written: Future[None] | None = None  # the write that took them out of the file
        self.touched: set[Item] = set()  # withheld, and its files were written or deleted
        self.changed = 0  # records changed since the last write
        self.written = 0  # records in the last write
        self.last_write = time.monotonic()
        self.index_failure: Exception | None = None  # the cache index's first failure in a write

    def withhold(self, takes: Iterable[tuple[str, int]], sequences: Iterable[str]) -> None:
        """These outputs may be overwritten, moved or deleted: the file stops naming them before
        the first output is touched (`before_touching`)."""
        self.withheld = {("scene", s, t) for s, t in takes if t in self.takes(s)} | \
            {("sequence", s, 0) for s in sequences if s in self.sequences}

    def before_touching(self) -> Future[None] | None:
        """An output is about to be written, moved or deleted: the withheld records leave the
        file, in one write taken the first time; the caller waits for the future returned (None:
        nothing to wait for) before it touches the file."""
        if self.withheld and self.withheld_written is None:
            self.write()
            self.withheld_written = self.pending
        return self.withheld_written

    def takes(self, scene_id: str) -> dict[int, SceneRecord]:
        entry = self.scenes.get(scene_id)
        return entry.take_records() if entry is not None else {}

    def withhold_take(self, scene_id: str, take: int) -> None:
        """A take whose files are about to change though `withhold` did not foresee it (a pull
        that found another render of the key on the remote than the one the lock records):
        the file stops naming it, in a write taken now; the caller waits for it (`settle`)
        before it touches the files."""
        self.withheld.add(("scene", scene_id, take))
        self.write()

    def withholds(self, scene_id: str, take: int) -> bool:
        return ("scene", scene_id, take) in self.withheld

    def touch(self, kind: str, name: str, take: int = 0) -> None:
        """Its files are about to change: its old record may no longer come back."""
        if (kind, name, take) in self.withheld:
            self.touched.add((kind, name, take))

    def touch_paths(self, scene_id: str, paths: Iterable[str]) -> None:
        """`paths` are about to be written: every withheld take of the scene whose record names
        one of them may no longer come back either (a new pick overwrites renders/<scene>.mp4,
        which the take picked before still names until it moves)."""
        wanted = set(paths)
        for take, record in self.takes(scene_id).items():
            if wanted & {record.video.path, record.last_frame.path}:
                self.touch("scene", scene_id, take)

    def put_take(self, scene_id: str, take: int, record: SceneRecord, pick: int) -> SceneRecord | None:
        """Record one take of a scene picked as `pick`; returns the record it replaces."""
        takes = self.takes(scene_id)
        old = takes.get(take)
        takes[take] = record
        self.scenes[scene_id] = scene_entry(takes, pick)
        self._changed(("scene", scene_id, take))
        return old

    def put_sequence(self, name: str, record: SequenceRecord) -> None:
        self.sequences[name] = record
        self._changed(("sequence", name, 0))

    def drop_take(self, scene_id: str, take: int, pick: int) -> SceneRecord | None:
        takes = self.takes(scene_id)
        record = takes.pop(take, None)
        self._set_takes(scene_id, takes, pick)
        self._changed(("scene", scene_id, take))
        return record

    def drop_scene(self, scene_id: str) -> list[SceneRecord]:
        """A scene gone from the spec: every take's record."""
        takes = self.takes(scene_id)
        self.scenes.pop(scene_id, None)
        for take in takes or (1,):
            self._changed(("scene", scene_id, take))
        return list(takes.values())

    def drop_sequence(self, name: str) -> SequenceRecord | None:
        record = self.sequences.pop(name, None)
        self._changed(("sequence", name, 0))
        return record

    def _set_takes(self, scene_id: str, takes: dict[int, SceneRecord], pick: int) -> None:
        if takes:
            self.scenes[scene_id] = scene_entry(takes, pick)
        else:
            self.scenes.pop(scene_id, None)

    def _changed(self, item: Item) -> None:
        self.withheld.discard(item)
        self.touched.discard(item)
        self.changed += 1
        if self.changed < MIN_BATCH:
            return
        if (self.changed >= self.written and self.written + self.changed <= self.early_limit) or \
                time.monotonic() - self.last_write >= STALE_AFTER:
            self.write()

    def close(self) -> None:
        """The final write: withheld records come back unless their files were touched."""
        for kind, name, take in self.touched:
            if kind == "sequence":
                self.sequences.pop(name, None)
            elif name in self.scenes:
                takes = self.takes(name)
                takes.pop(take, None)
                self._set_takes(name, takes, self.scenes[name].pick)
        self.withheld.clear()
        self.touched.clear()
        try:
            self.write()
            self.settle()
        finally:
            self.executor.shutdown()
        if self.index_failure is not None:
            commit, _ = self.before_write()  # what the index refused, once more (space may be back)
            try:
                commit()
            except (SparkspecError, OSError):
                raise self.index_failure from None

    def write(self) -> None:
        """Take a snapshot of the lock now; the writer's thread writes it."""
        if self.pending is not None and self.pending.done():
            self.pending.result()  # a failed write is raised here, and nothing is written after it
        commit, flush = self.before_write()
        scenes = {k: v for k, v in ((k, self._shown(k, v)) for k, v in sorted(self.scenes.items())) if v is not None}
        sequences = {k: v for k, v in sorted(self.sequences.items()) if ("sequence", k, 0) not in self.withheld}
        self.written = len(scenes) + len(sequences)
        self.changed = 0
        self.last_write = time.monotonic()
        self.pending = self.executor.submit(self._write, commit, flush, Lock(scenes, sequences), self.pending)

    def settle(self) -> None:
        """Wait for the writes taken so far; raise the first that failed."""
        if self.pending is not None:
            self.pending.result()

    def _write(self, commit: Callable[[], None], flush: bool, lock: Lock, before: Future[None] | None) -> None:
        if before is not None:
            before.result()  # the one before failed: so does this one, unwritten
        text = lock.to_text()
        changed = text != self.workspace.lock_text
        # Files written without an fsync (downloads, pulls, their links in renders/) go to disk
        # before the index names a task's render and before a changed lock names them. A lock
        # that stays as it was names nothing new: a teammate's clone pulling what its lock
        # names does not wait for the disk (after a power cut renders/ lacks some of it, as it
        # did before the apply, and the next apply pulls it again).
        if flush or changed:
            UNSYNCED.sync()
        try:
            commit()
        except (SparkspecError, OSError) as exc:
            # The cache index refused the batch (a full disk): its tasks stay journalled and the
            # next write tries it again. The lock still says what renders/ holds, so it is
            # written all the same; `close` reports the failure.
            self.index_failure = self.index_failure or exc
        if changed:
            write_lock(self.workspace.lock_path, lock)
            self.workspace.lock_text = text
            self.workspace.lock = lock

    def _shown(self, scene_id: str, entry: SceneRecord) -> SceneRecord | None:
        """The entry as the file may show it: without its withheld takes (None: all are)."""
        if not self.withheld:
            return entry
        takes = entry.take_records()
        kept = {t: r for t, r in takes.items() if ("scene", scene_id, t) not in self.withheld}
        if len(kept) == len(takes):
            return entry
        return scene_entry(kept, entry.pick) if kept else None
