"""project.spark.lock: what apply made, committed beside the spec (DESIGN section 4).

JSON with sorted keys and 2-space indent, no secrets, no absolute paths, no
timestamps, so a no-op apply rewrites it byte for byte.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TypeVar

from sparkspec.diagnostics import conflict_marker_line
from sparkspec.errors import StatePathError
from sparkspec.fsutil import atomic_write_text, read_regular
from sparkspec.jsontext import load_json

LOCK_VERSION = 1
T = TypeVar("T")


def _dumps(value: Any) -> str:
    return json.dumps(value, sort_keys=True, indent=2, ensure_ascii=False)


class _Fragment:
    """A record's text as it stands inside the lock, made once per record: apply rewrites
    the lock after every scene, and re-encoding every record each time is quadratic."""

    def to_json(self) -> dict[str, Any]:
        raise NotImplementedError

    @functools.cached_property
    def lock_text(self) -> str:
        return _dumps(self.to_json()).replace("\n", "\n    ")


_SHA256 = re.compile(r"[0-9a-f]{64}")


def _digest_or_none(value: Any) -> str | None:
    """An optional sha256 of the lock: absent, or 64 hex digits (ValueError otherwise)."""
    if value is None:
        return None
    if not (isinstance(value, str) and _SHA256.fullmatch(value)):
        raise ValueError("a sha256 is not 64 hex digits")
    return value


@dataclass(frozen=True)
class FileRecord:
    path: str  # relative to the project folder, with forward slashes
    sha256: str
    bytes: int

    def to_json(self) -> dict[str, Any]:
        return {"path": self.path, "sha256": self.sha256, "bytes": self.bytes}

    @staticmethod
    def from_json(raw: dict[str, Any]) -> FileRecord:
        """A file's record as the lock has it: a path, a sha256 of 64 hex digits, a size that is
        a whole number of bytes (a size "398428", -5 or 1e308 was taken as given, and the lock
        then no longer described renders/). ValueError otherwise."""
        path, sha, size = raw["path"], raw["sha256"], raw["bytes"]
        if not (isinstance(path, str) and isinstance(sha, str) and _SHA256.fullmatch(sha)
                and type(size) is int and size >= 0):
            raise ValueError("a file's path, sha256 or bytes is not of its kind")
        return FileRecord(path, sha, size)


@dataclass(frozen=True)
class SceneRecord(_Fragment):
    """A scene's render; for a scene with several takes, its picked take's, with every
    recorded take in `takes` (DESIGN section 10), so readers of version 1 see the pick."""

    key: str
    provider: str
    model: str
    task_id: str
    seed: int
    tokens: int
    video: FileRecord
    last_frame: FileRecord
    inputs: dict[str, Any] = field(default_factory=dict)  # the key's inputs, for plan's reasons
    seed_derived: bool = False
    cost: float | None = None
    take: int = 1  # which take this render is
    takes: tuple[SceneRecord, ...] = ()  # every recorded take, by number; () for a lone take 1
    pick: int = 1
    last_frame_extracted: bool = False  # the task gave no last frame: it was decoded from the video
    # `last_frame` is a stand-in decoded from the video again (the render's own was lost here
    # and in every cache): the sha256 of the render's own, which chained scenes are keyed by.
    rendered_frame_sha256: str | None = None

    @property
    def frame_identity(self) -> str:
        """What a scene chained after this take is keyed by: the render's own last frame."""
        return self.rendered_frame_sha256 or self.last_frame.sha256

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "key": self.key, "provider": self.provider, "model": self.model,
            "task_id": self.task_id, "seed": self.seed, "tokens": self.tokens,
            "video": self.video.to_json(), "last_frame": self.last_frame.to_json(),
            "inputs": self.inputs, "seed_derived": self.seed_derived,
        }
        if self.cost is not None:
            out["cost"] = self.cost
        if self.takes:
            out["takes"] = [{**t.to_json(), "take": t.take} for t in self.takes]
            out["pick"] = self.pick
        if self.last_frame_extracted:
            out["last_frame_extracted"] = True
        if self.rendered_frame_sha256 is not None:
            out["rendered_last_frame_sha256"] = self.rendered_frame_sha256
        return out

    @staticmethod
    def from_json(raw: dict[str, Any], take: int = 1) -> SceneRecord:
        takes = tuple(SceneRecord.from_json(t, int(t["take"])) for t in raw.get("takes") or ())
        return SceneRecord(
            key=str(raw["key"]), provider=str(raw["provider"]), model=str(raw["model"]),
            task_id=str(raw.get("task_id", "")), seed=int(raw["seed"]), tokens=int(raw.get("tokens", 0)),
            video=FileRecord.from_json(raw["video"]), last_frame=FileRecord.from_json(raw["last_frame"]),
            inputs=dict(raw.get("inputs") or {}), seed_derived=bool(raw.get("seed_derived", False)),
            cost=float(raw["cost"]) if raw.get("cost") is not None else None,
            take=take if not takes else next((t.take for t in takes if t.key == str(raw["key"])), take),
            takes=takes, pick=int(raw.get("pick", 1)),
            last_frame_extracted=bool(raw.get("last_frame_extracted", False)),
            rendered_frame_sha256=_digest_or_none(raw.get("rendered_last_frame_sha256")))

    def take_records(self) -> dict[int, SceneRecord]:
        """Every recorded take by number, each without the others."""
        if not self.takes:
            return {self.take: self}
        return {t.take: t for t in self.takes}


def scene_entry(takes: dict[int, SceneRecord], pick: int) -> SceneRecord:
    """The lock entry of a scene with these recorded takes (at least one): the picked take's
    render on top (the lowest recorded take's while the picked one is not recorded), every
    take listed; a lone take 1 picked keeps version 1's shape exactly."""
    ordered = [replace(takes[n], take=n, takes=(), pick=1) for n in sorted(takes)]
    top = next((t for t in ordered if t.take == pick), ordered[0])
    if len(ordered) == 1 and top.take == 1 and pick == 1:
        return top
    return replace(top, takes=tuple(ordered), pick=pick)


@dataclass(frozen=True)
class SequenceRecord(_Fragment):
    members: tuple[str, ...]  # the members' video sha256, in order
    video: FileRecord

    def to_json(self) -> dict[str, Any]:
        return {"members": list(self.members), "video": self.video.to_json()}

    @staticmethod
    def from_json(raw: dict[str, Any]) -> SequenceRecord:
        return SequenceRecord(tuple(str(m) for m in raw["members"]), FileRecord.from_json(raw["video"]))


@dataclass(frozen=True)
class Lock:
    scenes: dict[str, SceneRecord] = field(default_factory=dict)
    sequences: dict[str, SequenceRecord] = field(default_factory=dict)

    def to_text(self) -> str:
        """Byte for byte `json.dumps(payload, sort_keys=True, indent=2)`, from cached fragments."""
        return (f'{{\n  "scenes": {_section(self.scenes)},\n  "sequences": {_section(self.sequences)},\n'
                f'  "version": {LOCK_VERSION}\n}}\n')


def _section(records: dict[str, SceneRecord] | dict[str, SequenceRecord]) -> str:
    if not records:
        return "{}"
    items = [f"    {json.dumps(name, ensure_ascii=False)}: {record.lock_text}"
             for name, record in sorted(records.items())]
    return "{\n" + ",\n".join(items) + "\n  }"


def lock_path(spec_path: Path) -> Path:
    """project.spark.yaml -> project.spark.lock; other names get `.lock` beside them."""
    name = spec_path.name
    for suffix in (".yaml", ".yml"):
        if name.endswith(suffix):
            return spec_path.with_name(name[: -len(suffix)] + ".lock")
    return spec_path.with_name(name + ".lock")


def read_lock(path: Path) -> tuple[Lock, str]:
    """The lock and its text (empty when there is no lock yet)."""
    try:
        text = read_regular(path).decode("utf-8-sig")  # an editor's byte-order mark is no part of it
    except FileNotFoundError:
        return Lock(), ""
    except (OSError, UnicodeDecodeError) as exc:
        raise StatePathError(f"{path.name}: cannot read the lock ({exc}); restore it from git") from None
    conflict = conflict_marker_line(text)
    if conflict is not None:
        raise StatePathError(
            f"{path.name} has merge conflicts at line {conflict}, so it is no lock yet; keep one side "
            f"(`git checkout --ours {path.name}` or `--theirs`) and run `sparkspec plan`: the other "
            "side's renders are reused from the cache where this machine has them")
    try:
        raw = load_json(text)
        version = raw.get("version") if isinstance(raw, dict) else None
        if isinstance(version, int) and not isinstance(version, bool) and version > LOCK_VERSION:
            raise StatePathError(f"{path.name} was written by a newer sparkspec (lock version {version}; "
                                 f"this one reads version {LOCK_VERSION}); upgrade sparkspec "
                                 "(`pip install -U sparkspec`)")
        if not isinstance(raw, dict) or version != LOCK_VERSION:
            raise ValueError(f"expected version {LOCK_VERSION}")
        scenes = _entries(raw, "scenes", SceneRecord.from_json)
        sequences = _entries(raw, "sequences", SequenceRecord.from_json)
    except json.JSONDecodeError as exc:
        raise StatePathError(f"{path.name}:{exc.lineno}:{exc.colno}: the lock is not valid JSON "
                             f"({exc.msg}); restore it from git or delete it to render afresh") from None
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise StatePathError(f"{path.name}: the lock is malformed ({exc}); restore it from git "
                             "or delete it to render afresh") from None
    return Lock(scenes, sequences), text


def _entries(raw: dict[str, Any], name: str, parse: Callable[[Any], T]) -> dict[str, T]:
    """Each entry of the lock's `scenes` or `sequences`, parsed; a malformed one is named, with
    what is wrong in words (not Python's)."""
    entries = {}
    for key, value in _table(raw, name).items():
        where = f"{name}.{key}"
        if not isinstance(value, dict):
            raise ValueError(f"{where} is {type(value).__name__}, not an object")
        try:
            entries[str(key)] = parse(value)
        except KeyError as exc:
            raise ValueError(f"{where} lacks its field {exc.args[0]!r}") from None
        except (TypeError, AttributeError, ValueError):
            raise ValueError(f"{where} has a field of the wrong type") from None
    return entries


def _table(raw: dict[str, Any], name: str) -> dict[str, Any]:
    """The lock's `scenes` or `sequences`: absent is none; anything but an object is malformed
    (an empty list read as "no scenes" made apply rewrite a damaged lock as if it were new)."""
    value = raw.get(name, {})
    if not isinstance(value, dict):
        raise ValueError(f"{name!r} is {type(value).__name__}, not an object")
    return value


def write_lock(path: Path, lock: Lock) -> None:
    atomic_write_text(path, lock.to_text())
