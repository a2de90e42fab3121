"""What names a contact sheet, so a teammate's copy can stand in for decoding one.

A sheet is a pure function of what it shows: the scenes in the page's order, each with its
picked video and last frame (by sha256), and how it is drawn (`DRAWING`, raised whenever
contact.py draws differently). Its digest names it on the team's remote, where the machine
that made it pushes it: a clone applying the same lock fetches that one picture instead of
decoding three frames of every video it pulled.

`.sparkspec/review/sheet.json` records which sheet renders/contact.png is (its digest and the
file's sha256), so `push` uploads the file only while it is still that sheet, and where each
video's strip lies on it (`cells`), so the next apply crops the strips it did not change out of
it instead of decoding those videos again (`recorded_strips`).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from sparkspec.fsutil import atomic_write_text
from sparkspec.jsontext import load_json
from sparkspec.review.contact import MAX_COLUMNS, MAX_SCENES, THUMB_WIDTH, Cell, Strip, strips_on_sheet
from sparkspec.review.model import scene_order

if TYPE_CHECKING:
    from sparkspec.config.model import Project
    from sparkspec.state.lockfile import Lock

DRAWING = 1
RECORD = "sheet.json"
CELL_ID = 16


@dataclass(frozen=True)
class KnownSheet:
    """A sheet's PNG bytes and the digest they were made for (from the team's remote)."""

    digest: str
    png: bytes


def sheet_digest(project: Project, lock: Lock) -> str | None:
    """The digest of the sheet for `lock` (None when it has no scene: no sheet)."""
    rows = [[sid, lock.scenes[sid].video.sha256, lock.scenes[sid].last_frame.sha256]
            for sid in scene_order(project, lock)]
    if not rows:
        return None
    named = {"drawing": DRAWING, "thumb": THUMB_WIDTH, "columns": MAX_COLUMNS, "most": MAX_SCENES, "scenes": rows}
    return hashlib.sha256(json.dumps(named, separators=(",", ":")).encode()).hexdigest()


def record_sheet(thumbs: Path, digest: str, sheet: Path, cells: list[Cell] | None = None) -> None:
    """Note that `sheet` (just written) is the sheet `digest` names, with its strips at `cells`
    (None: a sheet not drawn here, a teammate's). The strip files earlier sparkspecs kept
    beside the record (one PNG a video) are removed: the sheet holds them now."""
    thumbs.mkdir(parents=True, exist_ok=True)
    sha = hashlib.sha256(sheet.read_bytes()).hexdigest()
    record: dict[str, object] = {"digest": digest, "sha256": sha}
    if cells:  # a video by the first 16 hex digits of its sha256: plenty among 256, a third the bytes
        record["cells"] = [[sha[:CELL_ID], *box] for sha, *box in cells]
    atomic_write_text(thumbs / RECORD, json.dumps(record, separators=(",", ":")) + "\n")
    for old in thumbs.glob("*.png"):
        if len(old.stem) == 64 and all(c in "0123456789abcdef" for c in old.stem):
            old.unlink(missing_ok=True)


def recorded_strips(thumbs: Path, sheet: Path, wanted: set[str]) -> dict[str, Strip]:
    """The strips of the `wanted` videos that the recorded sheet holds, cropped from it; none
    when the sheet is not the one recorded (changed, replaced, gone) or was not drawn here."""
    try:
        record = load_json((thumbs / RECORD).read_text(encoding="utf-8"))
        data = sheet.read_bytes()
    except (OSError, ValueError):
        return {}
    if not isinstance(record, dict) or record.get("sha256") != hashlib.sha256(data).hexdigest():
        return {}
    cells = record.get("cells")
    named = {sha[:CELL_ID]: sha for sha in wanted}
    try:
        boxes: list[Cell] = [(named[c[0]], int(c[1]), int(c[2]), int(c[3]), int(c[4]))
                             for c in cells or [] if c[0] in named]
        return strips_on_sheet(data, boxes, wanted)
    except (TypeError, ValueError, IndexError):
        return {}


def recorded_sheet(thumbs: Path, sheet: Path, digest: str) -> bytes | None:
    """`sheet`'s bytes when the record says it is the sheet `digest` names and it is unchanged."""
    try:
        record = load_json((thumbs / RECORD).read_text(encoding="utf-8"))
        data = sheet.read_bytes()
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or record.get("digest") != digest:
        return None
    return data if record.get("sha256") == hashlib.sha256(data).hexdigest() else None
