"""The journal of submitted tasks: a paid task's id is on disk before it is polled.

One JSON file per key under .sparkspec/journal/, fsync'd, so an apply killed at any
moment leaves every task it created findable by the next one, which collects it
instead of paying for it again.

A new entry is written straight to its own name (created exclusively, written,
fsync'd), not through a temporary file and a rename: it replaces nothing, so there is
nothing for a rename to keep whole, and it takes one journal commit of the file system
instead of two (the rename is a second change to the directory). It is the write on the
path from a paid create's answer to the disk, so it is kept that short. An apply killed
inside it leaves an empty or torn file, which `get` reports as damaged (the task may
exist), never a silently missing entry. Replacing an existing entry still goes through
a rename, so the old one is never torn. The system calls of a new entry keep the GIL
(`heldio`): no other thread runs between a create's answer and its entry on disk. A new
entry is padded with spaces to a 512-byte sector and written with O_DIRECT: a sector
reaches the disk, not a 4 KB page (`heldio`).
"""

from __future__ import annotations

import json
import os
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from sparkspec.errors import StatePathError
from sparkspec.fsutil import atomic_write_bytes, folder_id, fsync_dir
from sparkspec.jsontext import load_json
from sparkspec.state.heldio import write_new


UNCONFIRMED = ".unconfirmed"  # beside an entry: a create of that key whose answer was lost
CREATES = "creates-"  # creates-<pid>-<random>.log: the keys an apply sent creates for


class DamagedEntry(StatePathError):
    """A journal file that cannot be read: its task may exist, so it is reported, never dropped."""


@dataclass(frozen=True)
class JournalEntry:
    key: str
    scene: str
    provider: str
    task_id: str
    submitted_at: float  # unix seconds, to judge expiry
    expires_after: int  # seconds
    locator: str | None = None  # what the provider needs besides the id to find the task (queue URLs)

    def expired(self, now: float) -> bool:
        """Past its expiry: the API no longer renders it, so apply submits it again."""
        return now >= self.submitted_at + self.expires_after


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # another user's: alive
        return True
    return True


class Journal:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._log: int | None = None  # this apply's creates log (see `sending`)
        self._log_path: Path | None = None
        # What this process journalled and has not forgotten, and the folder it wrote them in
        # (device, inode): a folder deleted meanwhile (`rm -rf .sparkspec` during an apply)
        # is noticed and its entries written again (`vanished`, `rewrite`).
        self._live: dict[str, JournalEntry] = {}
        self._folder: tuple[int, int] | None = None

    def _path(self, key: str) -> Path:
        return self.directory / f"{key}.json"

    def get(self, key: str, provider: str | None = None) -> JournalEntry | None:
        """The entry for `key`, None when there is none; DamagedEntry when its file is unreadable,
        or names another provider than `provider` (a key is one provider's render: an entry of
        another's under it was not written by sparkspec, and may name a task paid for)."""
        path = self._path(key)
        try:
            raw = load_json(path.read_text(encoding="utf-8"))
            entry = JournalEntry(key=str(raw["key"]), scene=str(raw["scene"]), provider=str(raw["provider"]),
                                 task_id=str(raw["task_id"]), submitted_at=float(raw["submitted_at"]),
                                 expires_after=int(raw["expires_after"]),
                                 locator=None if raw.get("locator") is None else str(raw["locator"]))
        except (FileNotFoundError, NotADirectoryError):  # none; or a file where the folder goes, which
            return None  # holds no entry (apply's check before its first create names it)
        except (OSError, ValueError, TypeError, KeyError) as exc:
            raise DamagedEntry(f"{path}: damaged journal entry ({type(exc).__name__}: {exc})") from None
        if entry.key != key or not entry.task_id:
            raise DamagedEntry(f"{path}: damaged journal entry (it names key {entry.key[:12]}, "
                               f"task {entry.task_id!r})")
        if provider is not None and entry.provider != provider:
            raise DamagedEntry(f"{path}: damaged journal entry (task {entry.task_id} of provider "
                               f"{entry.provider!r}, under a key of a {provider} render)")
        return entry

    def record(self, key: str, scene: str, provider: str, task_id: str, expires_after: int,
               now: float | None = None, locator: str | None = None) -> JournalEntry:
        entry = JournalEntry(key, scene, provider, task_id, time.time() if now is None else now, expires_after,
                             locator)
        self.put(entry)
        return entry

    def put(self, entry: JournalEntry) -> None:
        """Write `entry` durably (an existing entry of its key is replaced whole)."""
        data = json.dumps(entry.__dict__, sort_keys=True).encode("utf-8")
        path = self._path(entry.key)
        try:
            write_new(path, data, pad=True)
        except FileNotFoundError:
            path.parent.mkdir(parents=True, exist_ok=True)
            write_new(path, data, pad=True)
        except FileExistsError:
            atomic_write_bytes(path, data)
        self._live[entry.key] = entry
        if self._folder is None:
            self._folder = folder_id(self.directory)

    def vanished(self) -> bool:
        """The folder this process journalled in is gone or was replaced since."""
        return self._folder is not None and folder_id(self.directory) != self._folder

    def rewrite(self) -> list[JournalEntry]:
        """Write again the entries this process journalled and has not forgotten (their folder
        vanished); returns them. OSError when they cannot be written."""
        self.directory.mkdir(parents=True, exist_ok=True)
        self._folder = folder_id(self.directory)
        entries = list(self._live.values())
        for entry in entries:
            self.put(entry)
        return entries

    def check_writable(self) -> None:
        """Raise OSError unless an entry can be written here now: made before an apply's first
        create, so that a folder that cannot take the paid task's id (read-only, a file in its
        place, a full disk) stops the apply before it pays, not after."""
        self.directory.mkdir(parents=True, exist_ok=True)
        probe = self.directory / f".probe-{os.getpid()}-{secrets.token_hex(4)}"  # not an entry: no .json
        try:
            write_new(probe, b"{}", pad=True)
        finally:
            probe.unlink(missing_ok=True)

    def forget(self, key: str) -> None:
        self.forget_many([key])

    def forget_many(self, keys: list[str]) -> None:
        gone = False
        for key in keys:
            self._live.pop(key, None)
            try:
                self._path(key).unlink()
            except FileNotFoundError:
                continue  # a render with no task of this apply's (pulled from the team's remote)
            gone = True
        if gone:
            fsync_dir(self.directory)

    def keys(self) -> set[str]:
        """The keys with an entry (readable or not), from one listing of the folder."""
        return self.listing()[0]

    def listing(self) -> tuple[set[str], set[str]]:
        """The keys with an entry, and those with an unconfirmed create (marked, or in the
        creates log of an apply that was killed), from one listing."""
        names, entries, dead = self._scan()
        unconfirmed = {name[:-len(UNCONFIRMED)] for name in names if name.endswith(UNCONFIRMED)}
        for log in dead:
            unconfirmed |= self._logged(log) - entries
        return entries, unconfirmed

    # -- creates on the wire -------------------------------------------------------------
    # Each create's key is appended to a log of the apply (one write, no fsync: a killed
    # process's writes survive it) before the request goes out. An apply killed while a create
    # was on the wire leaves its log: the next plan says beside that render that the API may
    # have made a task, and the next apply turns what the log names into marks.
    def sending(self, key: str) -> None:
        if self._log is None:
            self.directory.mkdir(parents=True, exist_ok=True)
            name = f"{CREATES}{os.getpid()}-{secrets.token_hex(4)}.log"
            self._log = os.open(self.directory / name, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
            self._log_path = self.directory / name
        os.write(self._log, f"{key}\n".encode())

    def close_log(self) -> None:
        """This apply is over: what its creates made is journalled, marked or collected."""
        if self._log is not None:
            os.close(self._log)
            self._log = None
            if self._log_path is not None:
                self._log_path.unlink(missing_ok=True)

    def settle_dead_logs(self, done: Callable[[str], bool]) -> None:
        """The logs of killed applies become marks for the keys with neither an entry nor a
        render (`done`), and go. Called with the apply lock held."""
        _, entries, dead = self._scan()
        for log in dead:
            for key in sorted(self._logged(log) - entries):
                if not done(key) and self.unconfirmed(key) is None:
                    self.mark_unconfirmed(key, "", "", log.stat().st_mtime)
            log.unlink(missing_ok=True)

    def _scan(self) -> tuple[list[str], set[str], list[Path]]:
        """One listing of the folder: its names, the keys with an entry, and the creates logs
        of applies that are gone."""
        try:
            names = [p.name for p in self.directory.iterdir()]
        except OSError:  # none yet (or unreadable: apply reports the entry it cannot read)
            return [], set(), []
        return names, {name[:-5] for name in names if name.endswith(".json")}, self._dead_logs(names)

    def _dead_logs(self, names: list[str]) -> list[Path]:
        logs = []
        for name in names:
            if not (name.startswith(CREATES) and name.endswith(".log")):
                continue
            pid = name[len(CREATES):].split("-", 1)[0]
            if pid.isdigit() and int(pid) != os.getpid() and not _alive(int(pid)):
                logs.append(self.directory / name)
        return logs

    def _logged(self, log: Path) -> set[str]:
        try:
            return {line for line in log.read_text(encoding="utf-8", errors="replace").split()
                    if len(line) == 64 and all(c in "0123456789abcdef" for c in line)}
        except OSError:
            return set()

    # -- creates whose answer was lost ---------------------------------------------------
    # A create that got no readable answer may have made a task (paid for) that nothing names:
    # it is not retried, and the next plan says so beside the render, so whoever approves it
    # knows it may be a second payment. The mark goes when a task of the key is journalled.
    def mark_unconfirmed(self, key: str, scene: str, provider: str, at: float) -> None:
        data = json.dumps({"scene": scene, "provider": provider, "at": at}, sort_keys=True).encode()
        self.directory.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(self.directory / f"{key}{UNCONFIRMED}", data)

    def unconfirmed(self, key: str) -> float | None:
        """When a create of `key` went unanswered (0.0 when the mark is unreadable); None: never."""
        try:
            raw = load_json((self.directory / f"{key}{UNCONFIRMED}").read_text(encoding="utf-8"))
        except (FileNotFoundError, NotADirectoryError):
            return None
        except (OSError, ValueError):
            return 0.0
        at = raw.get("at") if isinstance(raw, dict) else None
        return float(at) if isinstance(at, (int, float)) and not isinstance(at, bool) else 0.0

    def confirm(self, key: str) -> None:
        """A task of `key` is journalled: an earlier unanswered create is no longer news."""
        try:
            (self.directory / f"{key}{UNCONFIRMED}").unlink()
        except OSError:
            pass

    def entries(self) -> list[JournalEntry]:
        """The readable entries (a damaged one is reported when its scene is applied)."""
        if not self.directory.is_dir():
            return []
        found = []
        for path in sorted(self.directory.glob("*.json")):
            try:
                entry = self.get(path.stem)
            except DamagedEntry:
                continue
            if entry is not None:
                found.append(entry)
        return found
