"""The review: renders/index.html (the page) and renders/contact.png (the contact sheet),
made from the lock and the project after an apply. `write_review` is the one entry point."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from sparkspec.errors import MediaError, StatePathError

if TYPE_CHECKING:
    from sparkspec.review.contact import Cell, Strip
    from sparkspec.review.sheetid import KnownSheet
    from sparkspec.state.lockfile import Lock
    from sparkspec.state.workspace import Workspace

__all__ = ["PAGE", "write_review"]

PAGE = "index.html"


def write_review(workspace: Workspace, previous: Lock | None, contact_sheet: bool = True,
                 known: KnownSheet | None = None, not_rendered: Mapping[str, str] | None = None,
                 strips: Mapping[str, Strip] | None = None) -> list[Path]:
    """Write the page (and the contact sheet) for the lock as it stands. `previous` is the lock
    before this apply, for before / after; None, or an apply that changed no scene's picked
    video (it only restored, deleted or reused), keeps what the last apply recorded. `known`:
    a sheet from the team's remote, written as it is when it is the one this lock shows.
    `not_rendered`: the renders this apply failed or skipped, and why (the page says so).
    `strips`: contact-sheet strips the apply made as it fetched, by video sha256; those of the
    other scenes come from the sheet being replaced when it holds them, else are decoded.
    An apply that rendered anything (a take beside the pick, a new scene) is the last apply:
    what an earlier one changed is no longer marked.
    Returns the files written. Raises StatePathError or MediaError with a message to show."""
    from sparkspec.fsutil import atomic_write_bytes
    from sparkspec.review.before import (changed_scenes, found_before, load_marks, new_renders, record_before,
                                         save_marks)
    from sparkspec.review.contact import MAX_SCENES, SHEET, SheetEntry, write_contact_sheet
    from sparkspec.review.model import gather, picked_render
    from sparkspec.review.page import write_page
    from sparkspec.review.sheetid import record_sheet, recorded_strips, sheet_digest

    project, lock = workspace.project, workspace.lock
    output = project.root / project.output_dir
    if not lock.scenes and not lock.sequences:
        return []
    try:
        # A scene whose picked take did not render shows its old render: not a change.
        changed = frozenset(sid for sid in changed_scenes(previous, lock)
                            if picked_render(sid, lock.scenes[sid].pick) not in (not_rendered or {})) \
            if previous is not None else frozenset()
        # The first apply's scenes are all new: none is marked.
        fresh = new_renders(previous, lock) if previous is not None and previous.scenes else {}
        marks = workspace.state_dir / "review"
        if changed or fresh:
            assert previous is not None
            before = record_before(output, previous, changed, workspace.cache)
            new = frozenset(sid for sid in fresh if sid not in previous.scenes)
            save_marks(marks, fresh, new, lock)
        else:
            before = found_before(output, lock)
            changed = frozenset(before)
            fresh, new = load_marks(marks, lock)
        review = gather(project, lock, before, changed, not_rendered, fresh, new)
        written = [write_page(output, review)]
        digest = sheet_digest(project, lock) if contact_sheet else None
        if digest is not None:
            thumbs = workspace.state_dir / "review"
            cells: list[Cell] | None = None
            if known is not None and known.digest == digest:
                atomic_write_bytes(output / SHEET, known.png)
                sheet: Path | None = output / SHEET
            else:
                entries = [SheetEntry(s.id, output / s.picked.video, lock.scenes[s.id].video.sha256,
                                      output / s.picked.poster) for s in review.scenes]
                made = dict(strips or {})
                wanted = {e.video_sha256 for e in entries[:MAX_SCENES]} - made.keys()
                if wanted:
                    made.update(recorded_strips(thumbs, output / SHEET, wanted))
                absent = [e for e in entries[:MAX_SCENES] if e.video_sha256 not in made and not e.video.is_file()]
                if absent:  # a targeted apply on a fresh clone: the others are not in renders/ yet
                    more = f" and {len(absent) - 1} more" if len(absent) > 1 else ""
                    raise MediaError(f"{absent[0].video}{more} not in {project.output_dir}/ yet; an apply "
                                     "of every scene writes it")
                drawn = write_contact_sheet(output / SHEET, entries, made)
                sheet, cells = drawn if drawn is not None else (None, None)
            if sheet is not None:
                record_sheet(thumbs, digest, sheet, cells)
                written.append(sheet)
    except OSError as exc:
        where = exc.filename or output
        raise StatePathError(f"{where}: cannot write the review page ({exc.strerror or exc}); "
                             "the renders and the lock are fine") from None
    except MediaError as exc:
        raise MediaError(f"contact sheet not written: {exc}") from None
    return written
