"""`sparkspec remote status|verify|gc`, and the remote a command run uses.

Thin: open the project and its remote, run one coroutine of sparkspec.remote, print lines.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from pathlib import Path

from sparkspec.commands import size_text
from sparkspec.config.loader import LoadOptions
from sparkspec.errors import RemoteError
from sparkspec.remote.session import Remote, open_remote
from sparkspec.state.workspace import Workspace, open_workspace


@contextmanager
def remote_workspace(spec: Path, options: LoadOptions, remote: str | None, mode: str | None, *,
                     required: bool = True, environ: Mapping[str, str] = os.environ,
                     display: str | None = None) -> Iterator[tuple[Workspace, Remote | None]]:
    workspace = open_workspace(spec, options, display=display, environ=environ)
    try:
        session = open_remote(workspace.project.remote, workspace.state_dir, environ, remote=remote, mode=mode)
        if session is None and required:
            raise RemoteError("no remote in use: set `remote: {url: ...}` in the spec or SPARKSPEC_REMOTE "
                              "(and not --remote off / SPARKSPEC_REMOTE_MODE=off)")
        yield workspace, session
    finally:
        workspace.close()


def status_lines(spec: Path, options: LoadOptions, remote: str | None, mode: str | None,
                 as_json: bool) -> list[str]:
    from sparkspec.remote.audit import status
    from sparkspec.remote.sync import keys_in_renders

    with remote_workspace(spec, options, remote, mode) as (workspace, session):
        assert session is not None
        report = asyncio.run(status(session, workspace.lock, workspace.cache, keys_in_renders(workspace)))
    if as_json:
        return [json.dumps(report.to_json(), sort_keys=True)]
    labels = {"both": "local and remote", "local_only": "local only", "remote_only": "remote only",
              "neither": "in neither (render again)"}
    lines = [f"Remote {report.remote}: the lock's renders"]
    for place, label in labels.items():
        tally = report.places[place]
        lines.append(f"  {label + ':':<27}{tally.count:>6} ({size_text(tally.bytes)})")
    if report.queued:
        lines.append(f"  {report.queued} upload(s) queued; `sparkspec push` sends them")
    if report.root_pending:
        lines.append("  the lock's root is not registered yet (an apply was cut short): `remote gc` would not keep "
                     "these renders; `sparkspec push` or the next apply registers it")
    return lines


def verify_lines(spec: Path, options: LoadOptions, remote: str | None, mode: str | None,
                 deep: bool) -> tuple[list[str], bool]:
    """The report, and whether the remote is sound for this lock."""
    from sparkspec.remote.audit import verify
    from sparkspec.remote.sync import lock_root_path

    with remote_workspace(spec, options, remote, mode) as (workspace, session):
        assert session is not None
        report = asyncio.run(verify(session, workspace.lock, workspace.cache, workspace.state_dir / "tmp", deep,
                                    root=lock_root_path(workspace)))
    lines = [f"{key[:12]}: {problem}" for key, problem in sorted(report.problems.items())]
    how = f"re-hashed {report.rehashed} of {report.blobs} blob(s), {size_text(report.blob_bytes)}" if deep else (
        f"{report.blobs} blob(s) present at their sizes" if not report.problems else f"{report.blobs} blob(s) checked")
    lines.append(f"Verified {report.checked} entr{'y' if report.checked == 1 else 'ies'} ({how}); "
                 f"{len(report.problems)} problem(s); {len(report.missing)} of the lock's render(s) not on "
                 "the remote" + ("; `sparkspec push` uploads them" if report.missing else ""))
    if report.root_registered is False:
        lines.append("warning: the lock's root is not on the remote, so `remote gc` would not keep these renders "
                     "once past its grace period; `sparkspec push` registers it")
    return lines, not report.problems


def gc_lines(spec: Path, options: LoadOptions, remote: str | None, mode: str | None, dry_run: bool,
             grace: timedelta, now: datetime | None = None) -> list[str]:
    from sparkspec.remote.sweep import collect

    with remote_workspace(spec, options, remote, mode) as (_, session):
        assert session is not None
        report = asyncio.run(collect(session, now or datetime.now(timezone.utc), grace, dry_run))
    verb = "would delete" if dry_run else "deleted"
    lines = [f"{verb} {path}" + (f" (broken: {report.broken[path]})" if path in report.broken else "")
             for path in report.entries + report.blobs + report.sheets]
    lines += [f"{verb} {path} (an upload cut short)" for path in report.partials]
    entries = f"{len(report.entries)} entr{'y' if len(report.entries) == 1 else 'ies'}"
    swept = (f"{entries}, {len(report.blobs)} blob(s) and {len(report.sheets)} contact sheet(s)" if report.sheets
             else f"{entries} and {len(report.blobs)} blob(s)")
    lines.append(f"{'Would delete' if dry_run else 'Deleted'} {swept}, "
                 f"{size_text(report.freed)}; kept {report.kept_entries} entr"
                 f"{'y' if report.kept_entries == 1 else 'ies'} and {report.kept_blobs} blob(s) "
                 f"({report.roots} root(s), grace {_grace_text(grace)}).")
    if not report.roots and (report.entries or report.kept_entries):
        lines.append("note: no lock has registered a root on this remote (`sparkspec push` writes one, as does an "
                     "apply that uploads renders), so every entry goes once past the grace period")
    if report.broken_kept:
        lines.append(f"{report.broken_kept} broken entr{'y' if report.broken_kept == 1 else 'ies'} younger than the "
                     "grace period kept; a later gc removes them")
    if report.unreadable_rooted:
        shown = ", ".join(k[:12] for k in report.unreadable_rooted)
        lines.append(f"note: the entry of rooted key {shown} did not read, so which blobs it named cannot be told: "
                     "no unnamed blob was swept; `sparkspec push` from a machine that has the render writes the entry "
                     "again, and a later gc sweeps what is left")
    return lines


def _grace_text(grace: timedelta) -> str:
    seconds = int(grace.total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds and seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


MAX_GRACE_DAYS = 36500  # a century: anything longer keeps everything, and is a typo


def parse_grace(text: str) -> timedelta:
    """A duration with its unit (7d, 12h, 30m, 600s): a bare number but 0 is refused, since a
    user meaning days would otherwise get seconds and sweep what was meant to be kept."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    problem = f"--grace {text!r}: give a duration with its unit, such as 7d, 12h, 30m or 600s"
    text = text.strip().lower()
    if text.rstrip("0.") == "" and text:  # zero needs no unit: it is zero in every unit
        text += "s"
    if not text or text[-1] not in units:
        raise RemoteError(problem)
    try:
        value = float(text[:-1])
    except ValueError:
        raise RemoteError(problem) from None
    if not 0 <= value * units[text[-1]] <= MAX_GRACE_DAYS * 86400:  # NaN is refused here too
        raise RemoteError(f"{problem}, from 0s to {MAX_GRACE_DAYS}d")
    return timedelta(seconds=value * units[text[-1]])
