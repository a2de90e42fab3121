"""How apply reports: JSON lines, plain lines, or a live display on a terminal."""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any, TextIO


def silence(stream: TextIO) -> None:
    """Point `stream`'s file descriptor at /dev/null (its reader went away): nothing written
    to it fails again, up to the process's exit."""
    try:
        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, stream.fileno())
        os.close(null)
    except (OSError, ValueError):  # a stream without a file descriptor (a test's buffer)
        pass


def write_line(stream: TextIO, line: str) -> bool:
    """`line` onto `stream`; False when its reader is gone (`apply --json | head`): the stream
    then points at /dev/null, so the apply goes on to the end (what it submitted is collected
    and recorded) and nothing else fails on the closed pipe."""
    try:
        stream.write(line + "\n")
        stream.flush()
        return True
    except BrokenPipeError:
        silence(stream)
        return False


class JsonReporter:
    def __init__(self, stream: TextIO = sys.stdout) -> None:
        self.stream = stream
        self.closed = False  # the reader of the stream went away

    def __call__(self, event: dict[str, Any]) -> None:
        if not self.closed:
            self.closed = not write_line(self.stream, json.dumps(event, sort_keys=True))

    def close(self) -> None:
        pass


def describe(event: dict[str, Any]) -> str | None:
    kind = event["event"]
    subject = event.get("scene") or (f"sequence {event['sequence']}" if event.get("sequence") else "apply")
    if kind == "submitted":
        return f"{subject}: submitted (task {event['task_id']})"
    if kind == "resubmitted":
        return (f"{subject}: submitting again ({event['reason']}; task {event['task_id']}), "
                f"{event['count']} of at most {event['limit']} in this apply")
    if kind == "completed":
        return f"{subject}: rendered ({event['tokens']:,} tokens)"
    if kind == "failed":  # without a scene or sequence: the apply's own (the lock, the cache index)
        return f"error: {subject}: {event['error']}" if subject != "apply" else f"error: {event['error']}"
    if kind == "warning":
        return f"{subject}: warning: {event['message']}"
    if kind == "skipped":
        return f"error: {subject}: skipped: {event['reason']}"
    if kind == "deleted" and event.get("kept"):
        return f"{subject}: deleted from the lock; " + "; ".join(event["kept"])
    if kind in ("reused", "restored", "deleted", "stitched"):
        return f"{subject}: {kind}"
    if kind == "pulled":
        return f"{subject}: pulled from the team's remote"
    if kind == "pushed":
        return f"{subject}: pushed to the team's remote" if event.get("scene") else None
    if kind == "push_queued":
        return (f"{event.get('scene') or event['key'][:12]}: upload to the team's remote failed, queued for the "
                f"next apply or `sparkspec push`: {event['error']}")
    if kind == "remote_warning":
        return f"warning: {event['message']}"
    if kind == "progress" and event.get("state") == "waiting":
        return f"{subject}: waiting: {event['reason']}"
    if kind == "progress" and event.get("state") == "taken over":
        return f"{subject}: taken over: {event['reason']}"
    if kind == "progress" and event.get("state") == "unchanged":
        return f"{subject}: unchanged: {event['reason']}"
    if kind == "progress" and event.get("state") == "collecting":
        return f"{subject}: collecting task {event['task_id']} (already submitted, paid once)"
    if kind == "done":
        pulled = f"{event['pulled']} pulled, " if event.get("pulled") else ""
        return (f"Apply {'complete' if event['ok'] else 'finished with problems'}: "
                f"{event['completed']} rendered, {event['reused']} reused, {event['restored']} restored, {pulled}"
                f"{event['deleted']} deleted, {event['stitched']} stitched, {event['failed']} failed, "
                f"{event['skipped']} skipped; {event['tokens']:,} tokens"
                + (f" ({event['collected']} of the renders, {event['collected_tokens']:,} tokens, submitted and "
                   "paid by an earlier apply, collected now)." if event.get("collected") else "."))
    return None


class PlainReporter:
    """One line per event; failures (each printed once) go to stderr."""

    def __init__(self, stream: TextIO = sys.stdout, errors: TextIO | None = None) -> None:
        self.stream = stream
        self.errors = errors
        self.closed = False  # the reader of the stream went away

    def __call__(self, event: dict[str, Any]) -> None:
        line = describe(event)
        if line is not None:
            if event["event"] in ("failed", "skipped"):
                write_line(self.errors or sys.stderr, line)
            elif not self.closed:
                self.closed = not write_line(self.stream, line)

    def close(self) -> None:
        pass


class LiveReporter:
    """A rich progress display: a bar per render in flight, and the whole apply's count."""

    def __init__(self, total: int) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

        self.console = Console(highlight=False)
        self.progress = Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.fields[state]}"),
                                 TimeElapsedColumn(), console=self.console, transient=False)
        self.total, self.finished, self.tokens = total, 0, 0
        self.overall = self.progress.add_task("apply", total=max(total, 1), state=self.counts())
        self.tasks: dict[str, Any] = {}
        self.started = time.monotonic()
        self.progress.start()

    def __call__(self, event: dict[str, Any]) -> None:
        kind, scene = event["event"], event.get("scene")
        if kind == "submitted" and scene:
            self.tasks[scene] = self.progress.add_task(scene, total=1.0, state="submitted")
        elif kind == "progress" and scene in self.tasks:
            self.progress.update(self.tasks[scene], completed=event.get("progress") or 0, state="rendering")
        elif kind in ("completed", "failed", "skipped", "reused", "restored", "pulled", "deleted") and scene:
            if scene in self.tasks:
                self.progress.update(self.tasks[scene], completed=1.0, state=kind)
            self.tokens += int(event.get("tokens") or 0)
            self.finished += 1
            self.progress.update(self.overall, advance=1, state=self.counts())
        line = describe(event)
        if line is not None and (kind not in ("submitted", "progress") or event.get("state") == "unchanged"):
            self.progress.console.print(line)

    def counts(self) -> str:
        return f"{self.finished}/{self.total} done, {self.tokens:,} tokens"

    def close(self) -> None:
        self.progress.stop()
