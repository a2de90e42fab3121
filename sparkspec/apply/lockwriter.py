"""The lock during an apply: kept in memory, written to disk coalesced, never a lie.

Rewriting the whole lock after every scene costs bytes in the square of the scene
count (1,600 scenes wrote 1.85 GB for a 1.6 MB lock). Here a write happens once as
many records changed as the last write held, and at least MIN_BATCH, (so all writes
together are at most about twice the final lock) and once at the end. Between writes the lock on disk may lag
behind renders/ (a finished scene not listed yet: the cache has it, the next plan calls
it `reuse`), but it never names a file that is not as it says: records of outputs this
apply may overwrite or delete are withheld from the file, in one write before any of
them is touched, until their new record replaces them. A withheld record whose files
were never touched (its render failed) goes back in at the end.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from sparkspec.state.lockfile import Lock, SceneRecord, SequenceRecord, write_lock
from sparkspec.state.workspace import Workspace


MIN_BATCH = 8  # records: a write (and a cache index transaction) costs pages, whatever it holds


class LockWriter:
    def __init__(self, workspace: Workspace, before_write: Callable[[], None] = lambda: None) -> None:
        self.workspace = workspace
        self.before_write = before_write  # what must be on disk before the lock may name it
        self.scenes: dict[str, SceneRecord] = dict(workspace.lock.scenes)
        self.sequences: dict[str, SequenceRecord] = dict(workspace.lock.sequences)
        self.withheld: set[tuple[str, str]] = set()  # ("scene" | "sequence", id)
        self.touched: set[tuple[str, str]] = set()  # withheld, and its files were written or deleted
        self.changed = 0  # records changed since the last write
        self.written = 0  # records in the last write

    def withhold(self, scenes: Iterable[str], sequences: Iterable[str]) -> None:
        """Before any of these outputs is overwritten or deleted: the file stops naming them."""
        self.withheld = {("scene", s) for s in scenes if s in self.scenes} | \
            {("sequence", s) for s in sequences if s in self.sequences}
        if self.withheld:
            self.write()

    def touch(self, kind: str, name: str) -> None:
        """Its files are about to change: its old record may no longer come back."""
        if (kind, name) in self.withheld:
            self.touched.add((kind, name))

    def put_scene(self, scene_id: str, record: SceneRecord) -> None:
        self.scenes[scene_id] = record
        self._changed(("scene", scene_id))

    def put_sequence(self, name: str, record: SequenceRecord) -> None:
        self.sequences[name] = record
        self._changed(("sequence", name))

    def drop_scene(self, scene_id: str) -> SceneRecord | None:
        record = self.scenes.pop(scene_id, None)
        self._changed(("scene", scene_id))
        return record

    def drop_sequence(self, name: str) -> SequenceRecord | None:
        record = self.sequences.pop(name, None)
        self._changed(("sequence", name))
        return record

    def _changed(self, item: tuple[str, str]) -> None:
        self.withheld.discard(item)
        self.touched.discard(item)
        self.changed += 1
        if self.changed >= max(MIN_BATCH, self.written):
            self.write()

    def close(self) -> None:
        """The final write: withheld records come back unless their files were touched."""
        for kind, name in self.touched:
            (self.scenes if kind == "scene" else self.sequences).pop(name, None)
        self.withheld.clear()
        self.touched.clear()
        self.write()

    def write(self) -> None:
        self.before_write()
        scenes = {k: v for k, v in sorted(self.scenes.items()) if ("scene", k) not in self.withheld}
        sequences = {k: v for k, v in sorted(self.sequences.items()) if ("sequence", k) not in self.withheld}
        lock = Lock(scenes, sequences)
        text = lock.to_text()
        if text != self.workspace.lock_text:
            write_lock(self.workspace.lock_path, lock)
            self.workspace.lock_text = text
            self.workspace.lock = lock
        self.written = len(scenes) + len(sequences)
        self.changed = 0
