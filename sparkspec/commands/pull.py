"""`sparkspec pull`: fill renders/ with what the lock refers to, from the cache or the remote."""

from __future__ import annotations

import asyncio
from pathlib import Path

from sparkspec.commands import size_text
from sparkspec.commands.remote import remote_workspace
from sparkspec.config.loader import LoadOptions
from sparkspec.state.applylock import apply_lock


def pull(spec: Path, options: LoadOptions, remote: str | None, mode: str | None,
         display: str | None = None) -> tuple[list[str], bool]:
    """The lines to print, and whether renders/ now holds every scene the lock refers to."""
    from sparkspec.remote.sync import pull_lock

    with remote_workspace(spec, options, remote, mode, required=False, display=display) as (workspace, session):
        with apply_lock(workspace.state_dir, command="pull", cache=workspace.cache.directory):
            report = asyncio.run(pull_lock(session, workspace))
    lines = [f"pulled {sid} ({size_text(size)})" for sid, size in sorted(report.pulled.items())]
    lines += [f"restored {sid} from the local cache" for sid in report.restored]
    lines += [f"{name}: {why}" for name, why in sorted(report.problems.items())]
    if report.sequences:
        lines.append(f"sequence(s) {', '.join(report.sequences)}: `sparkspec apply` stitches them from "
                     "the clips (no render cost)")
    lines.append(f"Pulled {len(report.pulled)} render(s), {size_text(sum(report.pulled.values()))}; "
                 f"restored {len(report.restored)} from the local cache; {report.in_place} already in place"
                 f"{f'; {len(report.problems)} not available' if report.problems else ''}.")
    return lines, not report.problems
