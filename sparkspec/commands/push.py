"""`sparkspec push`: upload what the lock refers to (and queued uploads) that the remote lacks."""

from __future__ import annotations

import asyncio
from pathlib import Path

from sparkspec.commands import size_text
from sparkspec.commands.remote import remote_workspace
from sparkspec.config.loader import LoadOptions
from sparkspec.state.applylock import apply_lock


def push(spec: Path, options: LoadOptions, remote: str | None, mode: str | None,
         display: str | None = None) -> tuple[list[str], bool]:
    """The lines to print, and whether everything the lock refers to is now on the remote."""
    from sparkspec.remote.sync import push_lock

    with remote_workspace(spec, options, remote, mode, display=display) as (workspace, session):
        assert session is not None
        with apply_lock(workspace.state_dir, command="push"):
            report = asyncio.run(push_lock(session, workspace))
    lines = [f"pushed {key[:12]} ({size_text(size)})" for key, size in sorted(report.pushed.items())]
    lines += [f"{name}: {why}" for name, why in sorted(report.unavailable.items())]
    lines += [f"{key[:12]}: upload failed, queued for the next apply or push: {why}"
              for key, why in sorted(report.failed.items())]
    if report.root:
        lines.append(f"registered {report.root}")
    lines.append(f"Pushed {len(report.pushed)} render(s), {size_text(sum(report.pushed.values()))}; "
                 f"{report.present} already on the remote; {len(report.unavailable) + len(report.failed)} "
                 f"not pushed.")
    return lines, not (report.unavailable or report.failed)
