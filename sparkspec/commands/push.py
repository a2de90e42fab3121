"""`sparkspec push`: upload what the lock refers to (and queued uploads) that the remote lacks."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import TYPE_CHECKING

from sparkspec.commands import size_text
from sparkspec.commands.remote import remote_workspace
from sparkspec.config.loader import LoadOptions
from sparkspec.state.applylock import apply_lock

SHEET_PUSH_WAIT = 30.0  # seconds: a picture is not worth holding the command longer
NOT_PUSHED = "contact sheet not pushed"  # how push_sheet's lines that are warnings begin

if TYPE_CHECKING:
    from sparkspec.remote.session import Remote
    from sparkspec.review.sheetid import KnownSheet
    from sparkspec.state.workspace import Workspace


def push(spec: Path, options: LoadOptions, remote: str | None, mode: str | None,
         display: str | None = None) -> tuple[list[str], bool]:
    """The lines to print, and whether everything the lock refers to is now on the remote."""
    from sparkspec.remote.sync import push_lock

    with remote_workspace(spec, options, remote, mode, display=display) as (workspace, session):
        assert session is not None
        with apply_lock(workspace.state_dir, command="push", cache=workspace.cache.directory):
            report = asyncio.run(push_lock(session, workspace))
            sheet = push_sheet(workspace, session, make=True) if workspace.lock.scenes else None
    lines = [f"pushed {key[:12]} ({size_text(size)})" for key, size in sorted(report.pushed.items())]
    lines += [f"repaired {key[:12]}: uploaded its blobs again ({size_text(size)})"
              for key, size in sorted(report.repaired.items())]
    lines += [f"shared {key[:12]}: the remote's entry of the key names another render (write-once); this "
              f"render's files were uploaded ({size_text(size)}), so a lock that names it pulls them"
              for key, size in sorted(report.shared.items())]
    lines += [f"{key[:12]}: {why}" for key, why in sorted(report.broken.items())]
    lines += [f"{name}: {why}" for name, why in sorted(report.unavailable.items())]
    lines += [f"{key[:12]}: upload failed, queued for the next apply or push: {why}"
              for key, why in sorted(report.failed.items())]
    if report.root:
        lines.append(f"registered {report.root}")
    if sheet:
        lines.append(sheet)
    lines.append(f"Pushed {len(report.pushed)} render(s), {size_text(sum(report.pushed.values()))}; "
                 f"{report.present} already on the remote"
                 + (f" ({len(report.repaired)} repaired)" if report.repaired else "")
                 + f"; {len(report.unavailable) + len(report.failed) + len(report.broken)} not pushed.")
    return lines, not (report.unavailable or report.failed or report.broken)


def push_sheet(workspace: Workspace, remote: Remote, *, make: bool = False,
               fetched: KnownSheet | None = None) -> str | None:
    """Upload the lock's contact sheet (renders/contact.png, while it is still that sheet)
    unless the remote has it, so a clone applying this lock fetches it instead of decoding
    every video. `make`: write the review first when renders/ holds another sheet. `fetched`:
    the sheet this run took from the remote (not sent back). A line to print, or None; a
    sheet is a picture, so nothing here fails the command."""
    from sparkspec.errors import SparkspecError
    from sparkspec.review import write_review
    from sparkspec.review.contact import SHEET
    from sparkspec.review.sheetid import recorded_sheet, sheet_digest

    digest = sheet_digest(workspace.project, workspace.lock)
    if digest is None or (fetched is not None and fetched.digest == digest):
        return None
    thumbs = workspace.state_dir / "review"
    sheet = workspace.project.root / workspace.project.output_dir / SHEET
    png = recorded_sheet(thumbs, sheet, digest)
    root = workspace.project.root
    # A sheet is made from the videos in renders/: a clone that has not pulled them has none
    # to make it from (and the remote has the sheet of the lock it pulled, if a teammate pushed it).
    if png is None and make and all((root / r.video.path).is_file() for r in workspace.lock.scenes.values()):
        try:
            write_review(workspace, None)
        except SparkspecError as exc:
            return f"{NOT_PUSHED}: {exc}"
        png = recorded_sheet(thumbs, sheet, digest)
    if png is None:
        return None
    try:
        written = asyncio.run(asyncio.wait_for(remote.push_sheet(digest, png), SHEET_PUSH_WAIT))
    except SparkspecError as exc:
        return f"{NOT_PUSHED}: {exc}"
    except TimeoutError:
        return (f"{NOT_PUSHED}: remote {remote.display} did not answer within "
                f"{SHEET_PUSH_WAIT:.0f} s; the next apply or push tries again")
    return f"pushed the contact sheet {digest[:12]} ({size_text(len(png))})" if written else None
