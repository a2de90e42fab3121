"""The journal of submitted tasks: a paid task's id is on disk before it is polled.

The entries are records of one append-only log, `.sparkspec/journal/tasks.log`, each fsync'd
before `put` returns, so an apply killed at any moment leaves every task it created findable
by the next one, which collects it instead of paying for it again. A record is exactly one
512-byte sector, padded with spaces and ending in a newline, written with O_DIRECT where the
file system takes it (`heldio.SectorLog`): a sector reaches the disk, not a 4 KB page, and is
written whole or not at all, so each sector is read on its own and a damaged one damages
nothing else.

    P <key> <json entry>               a task of the key (a later one of the key replaces it)
    F <position>:<key prefix> ...      the tasks recorded at those positions are done

An entry too long for a sector (a provider's long locator) is a file of its own,
`<key>.json`, the layout an older sparkspec used for every entry, which is still read and
removed when its task is done. The log replaced that layout: at 5,000 scenes the thousands of
entry files alive at once (an entry goes when the cache's index commits its render, with the
lock's writes) cost 0.9 KB a scene of inodes and directory blocks, more than the entries
(benchmarks/RESULTS.md, session 18).

A record that cannot be read is reported, never taken for no entry: under its key when its
key is readable, else for every key (a task it names may exist and be paid for). The writer
checks before each append that it still appends to the log the folder holds (a folder or log
deleted during an apply is made again, with this process's live entries, before the put
returns). The apply that appended compacts the log when it ends: the entries still alive are
written to a new log that replaces it, and no log stays when none is. The append's own system
calls keep the GIL (`heldio`).
"""

from __future__ import annotations

import json
import os
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from sparkspec.errors import StatePathError
from sparkspec.fsutil import atomic_write_bytes, folder_id, fsync_dir
from sparkspec.jsontext import load_json
from sparkspec.state.heldio import SECTOR, SectorLog, write_new


UNCONFIRMED = ".unconfirmed"  # beside an entry: a create of that key whose answer was lost
CREATES = "creates-"  # creates-<pid>-<random>.log: the keys an apply sent creates for
LOG = "tasks.log"
PREFIX = 8  # hex digits of a key a forget record names beside each position


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
    # When an apply found the API does not know the task (a 404 past the grace after its
    # create): `--replace` then submits afresh instead of collecting it.
    unknown_at: float | None = None


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
        self._writer: SectorLog | None = None  # the log, open for appending (this process appends)
        self._state: _LogState | None = None  # the log as last read or appended to
        self._stat: tuple[int, int, int] | None = None  # the log's (inode, size, mtime) then
        # Entries are put from the event loop's thread and forgotten from the lock writer's: a
        # record's position and the state it updates go together.
        self._mutex = threading.RLock()

    def _path(self, key: str) -> Path:
        return self.directory / f"{key}.json"

    @property
    def log_path(self) -> Path:
        return self.directory / LOG

    def keyless_damage(self) -> bool:
        """The log holds a damaged record whose key cannot be read: `get` of any key says so."""
        return bool(self._read().unplaced)

    def get(self, key: str, provider: str | None = None) -> JournalEntry | None:
        """The entry for `key`, None when there is none; DamagedEntry when its record is
        unreadable, or names another provider than `provider` (a key is one provider's render:
        an entry of another's under it was not written by sparkspec, and may name a task paid for)."""
        state = self._read()
        if state.unreadable is not None:
            raise DamagedEntry(f"{self.log_path}: cannot read the journal of submitted tasks ({state.unreadable}); "
                               "a task it holds may exist and be paid for: make it readable")
        found = state.live.get(key)
        if state.unplaced and not isinstance(found, tuple):
            # A readable entry of `key` is still collected (its task is paid for either way);
            # any other key may be the damaged line's, so nothing is submitted for it.
            raise DamagedEntry(f"{self.log_path}: damaged journal entry (record {state.unplaced[0]}, the line of "
                               f"bytes {state.unplaced[0] * SECTOR}-{state.unplaced[0] * SECTOR + SECTOR - 1}, names no "
                               "readable key: the task it held may exist and be paid for; the other lines are the "
                               "tasks of other renders: delete that line alone once you know it)")
        if isinstance(found, str):
            raise DamagedEntry(f"{self.log_path}: damaged journal entry of key {key[:12]} ({found})")
        if found is not None:
            entry, path = found[1], self.log_path
        else:
            path = self._path(key)  # an older sparkspec's entry, a file of its own
            try:
                entry = _decode(load_json(path.read_text(encoding="utf-8")))
            except (FileNotFoundError, NotADirectoryError):  # none; or a file where the folder goes, which
                return None  # holds no entry (apply's check before its first create names it)
            except (OSError, ValueError, TypeError, KeyError, ArithmeticError) as exc:
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
        """Write `entry` durably (an entry of its key already there is replaced)."""
        with self._mutex:
            self._put(entry)
            self._live[entry.key] = entry
        if self._folder is None:
            self._folder = folder_id(self.directory)

    def _put(self, entry: JournalEntry) -> None:
        """`put` with the mutex held: a record of the log, or a file of its own (rare: a long
        locator), which makes a record of the key in the log one of the past."""
        line = _line(entry)
        if len(line) < SECTOR:
            state = self._appending()
            state.put(self._append(_record(line)), entry)
            return
        path, data = self._path(entry.key), json.dumps(entry.__dict__, sort_keys=True).encode("utf-8")
        try:
            write_new(path, data, pad=True)
        except FileNotFoundError:
            path.parent.mkdir(parents=True, exist_ok=True)
            write_new(path, data, pad=True)
        except FileExistsError:
            atomic_write_bytes(path, data)
        self._forget_logged([entry.key])

    def vanished(self) -> bool:
        """The folder this process journalled in is gone or was replaced since."""
        return self._folder is not None and folder_id(self.directory) != self._folder

    def rewrite(self) -> list[JournalEntry]:
        """Write again the entries this process journalled and has not forgotten (their folder
        vanished); returns them. OSError when they cannot be written."""
        self.directory.mkdir(parents=True, exist_ok=True)
        self._folder = folder_id(self.directory)
        with self._mutex:
            self._close_writer()
            self._state = self._stat = None
        entries = list(self._live.values())
        for entry in entries:
            self.put(entry)
        return entries

    def check_writable(self) -> None:
        """Raise OSError unless an entry can be appended to the log now: made before an apply's
        first create, so that a log or folder that cannot take the paid task's id (read-only,
        a file in its place, a full disk, the file size limit) stops the apply before it pays,
        not after. Appends a blank sector, which is no record."""
        self.directory.mkdir(parents=True, exist_ok=True)
        with self._mutex:
            self._appending()
            self._append(_record(b""))

    def forget(self, key: str) -> None:
        self.forget_many([key])

    def forget_many(self, keys: list[str]) -> None:
        """The tasks of `keys` are done (their renders are in the cache's index)."""
        with self._mutex:
            self._forget_logged(keys)
            for key in keys:
                self._live.pop(key, None)
        gone = False
        for key in keys:
            try:
                self._path(key).unlink()  # an entry of its own (long, or an older sparkspec's)
            except OSError:
                continue
            gone = True
        if gone:
            fsync_dir(self.directory)

    def _forget_logged(self, keys: list[str]) -> None:
        """Forget records for those of `keys` that have a record in the log (none: no write)."""
        if not any(key in self._read().position for key in keys):
            return
        state = self._appending()  # (read again if the log was not open yet)
        pairs = sorted((state.position[key], key) for key in keys if key in state.position)
        records, line = [], b"F"
        for position, key in pairs:
            item = f" {position}:{key[:PREFIX]}".encode()
            if len(line) + len(item) >= SECTOR:
                records.append(line)
                line = b"F"
            line += item
        records.append(line)
        self._append(b"".join(_record(r) for r in records))
        state.forget(pairs)

    # -- the log -------------------------------------------------------------------------
    def _appending(self) -> _LogState:
        """The log open for appending (made on first use), and its state. A writer whose file
        is no longer the folder's log (the folder or the log deleted meanwhile, the log
        replaced) is opened afresh, and this process's live entries the new log lacks are
        appended to it first: what `put` returned for stays on disk."""
        if self._writer is not None and not self._writer.is_at(self.log_path):
            self._close_writer()
            lost = True
        else:
            lost = False
        if self._writer is None:
            try:
                self._writer = SectorLog(self.log_path)
            except FileNotFoundError:
                self.directory.mkdir(parents=True, exist_ok=True)
                self._writer = SectorLog(self.log_path)
            self._state = self._stat = None
        state = self._read()
        if lost:
            for entry in list(self._live.values()):
                if entry.key not in state.live and not self._path(entry.key).exists():
                    self._put(entry)  # (the writer is the folder's log now: no second round)
            self._folder = folder_id(self.directory)
        return state

    def _append(self, records: bytes) -> int:
        """Append `records` (whole sectors), fsync'd: the position of the first."""
        assert self._writer is not None
        position = self._writer.append(records) // SECTOR
        self._stat = _stat_of(self.log_path)
        return position

    def _read(self) -> _LogState:
        """The log's state: read again when the file changed since (another process appended)."""
        with self._mutex:
            stat = _stat_of(self.log_path)
            if self._state is None or stat != self._stat:
                self._state = _LogState.parse(self.log_path)
                self._stat = stat
            return self._state

    def _close_writer(self) -> None:
        if self._writer is not None:
            writer, self._writer = self._writer, None
            try:
                writer.close()
            except OSError:
                pass

    def compact(self) -> None:
        """The log written again with only the entries alive (none: no log), replacing it
        atomically; by the apply that appended to it, as it ends. A log with a damaged record
        is left as it is (the record is reported, and stays until the user mends it)."""
        with self._mutex:
            if self._writer is None:
                return
            self._close_writer()
            state = _LogState.parse(self.log_path)
            self._state = self._stat = None
            if state.unplaced or state.damaged or not (state.forgotten or state.blank):
                return
            live = [found[1] for found in state.live.values() if not isinstance(found, str)]
            try:
                if not live:
                    self.log_path.unlink()
                else:
                    atomic_write_bytes(self.log_path, b"".join(_record(_line(e)) for e in live))
                fsync_dir(self.directory)
            except OSError:
                pass  # it stays as it was, read the same way

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
        """This apply is over: what its creates made is journalled, marked or collected; the
        log of tasks is compacted."""
        self.compact()
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
        logged = set(self._read().live) if LOG in names else set()
        return names, logged | {name[:-5] for name in names if name.endswith(".json")}, self._dead_logs(names)

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
        for key in sorted(self.keys()):
            try:
                entry = self.get(key)
            except DamagedEntry:
                continue
            if entry is not None:
                found.append(entry)
        return found


def _decode(raw: object) -> JournalEntry:
    if not isinstance(raw, dict):
        raise TypeError("not an object")
    return JournalEntry(key=str(raw["key"]), scene=str(raw["scene"]), provider=str(raw["provider"]),
                        task_id=str(raw["task_id"]), submitted_at=float(raw["submitted_at"]),
                        expires_after=int(raw["expires_after"]),
                        locator=None if raw.get("locator") is None else str(raw["locator"]),
                        unknown_at=None if raw.get("unknown_at") is None else float(raw["unknown_at"]))


def _line(entry: JournalEntry) -> bytes:
    """The log's record of `entry`, unpadded."""
    return f"P {entry.key} {json.dumps(entry.__dict__, sort_keys=True)}".encode("utf-8")


def _record(line: bytes) -> bytes:
    """`line` (shorter than a sector) padded with spaces to one sector, the last byte a newline."""
    assert len(line) < SECTOR, len(line)
    return line.ljust(SECTOR - 1) + b"\n"


def _stat_of(path: Path) -> tuple[int, int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_ino, st.st_size, st.st_mtime_ns


_HEX = frozenset("0123456789abcdef")


class _LogState:
    """The log read: each key's live entry (position, entry), or why its record is unreadable
    (a str); the positions of records that name no readable key."""

    def __init__(self) -> None:
        self.live: dict[str, tuple[int, JournalEntry] | str] = {}
        self.position: dict[str, int] = {}  # key -> the position of its live put
        self.at: dict[int, str] = {}  # position of a put -> its key
        self.unplaced: list[int] = []
        self.unreadable: str | None = None  # the file could not be read at all: why
        self.damaged = False
        self.forgotten = False  # a forget record, or a put replaced: compacting drops something
        self.blank = False  # a blank sector: compacting drops it

    @classmethod
    def parse(cls, path: Path) -> _LogState:
        state = cls()
        try:
            data = path.read_bytes()
        except (FileNotFoundError, NotADirectoryError):
            return state
        except OSError as exc:
            state.unreadable = exc.strerror or str(exc)
            state.unplaced.append(0)
            state.damaged = True
            return state
        for position in range(-(-len(data) // SECTOR)):  # a sector a record, each on its own
            record = data[position * SECTOR:(position + 1) * SECTOR].strip(b" \n\0")
            if record:
                state._take(position, record)
            else:  # never written (a crash as the file grew), or check_writable's
                state.blank = True
        return state

    def _take(self, position: int, record: bytes) -> None:
        text = record.decode("utf-8", errors="replace")
        if text.startswith("P "):
            key = text[2:66]
            if len(key) != 64 or not _HEX.issuperset(key) or text[66:67] != " ":
                self._damage(position)
                return
            try:
                entry = _decode(load_json(text[67:]))
                if entry.key != key:
                    raise ValueError(f"its entry names key {entry.key[:12]}")
            except (ValueError, TypeError, KeyError, ArithmeticError) as exc:
                self.live[key] = f"record {position}: {type(exc).__name__}: {exc}"
                self.position.pop(key, None)
                self.damaged = True
                return
            self.put(position, entry)
        elif text.startswith("F "):
            pairs = []
            for item in text[2:].split():
                at, _, prefix = item.partition(":")
                if not at.isdigit() or len(prefix) != PREFIX or not _HEX.issuperset(prefix):
                    self._damage(position)  # which tasks it said are done is unknown: none is dropped
                    return
                pairs.append((int(at), prefix))
            self.forget(pairs)
        else:
            self._damage(position)

    def _damage(self, position: int) -> None:
        self.unplaced.append(position)
        self.damaged = True

    def put(self, position: int, entry: JournalEntry) -> None:
        if entry.key in self.position:
            self.forgotten = True  # replaced
        self.live[entry.key] = (position, entry)
        self.position[entry.key] = position
        self.at[position] = entry.key

    def forget(self, pairs: list[tuple[int, str]]) -> None:
        """The puts at these positions, whose keys start so, are done."""
        self.forgotten = True
        for at, prefix in pairs:
            key = self.at.get(at)
            if key is not None and key.startswith(prefix[:PREFIX]) and self.position.get(key) == at:
                del self.live[key], self.position[key]
