"""A project opened for work: the spec loaded, its lock, cache and state folder."""

from __future__ import annotations

import gc
import hashlib
import os
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from sparkspec.errors import DiskError
from sparkspec.state.cache import CACHE_ENV, Cache, cache_dir
from sparkspec.diagnostics import Diagnostic
from sparkspec.state.digests import DigestMemo
from sparkspec.state.journal import Journal
from sparkspec.state.lockfile import Lock, lock_path, read_lock
from sparkspec.state.lockpaths import check_lock_paths
from sparkspec.plan.collect import Tasks, uncollected
from sparkspec.plan.model import Plan, PlanOptions
from sparkspec.plan.planner import plan_changes
from sparkspec.config.loader import STATE_FOLDER, LoadOptions, load_project
from sparkspec.config.model import Project

if TYPE_CHECKING:
    from sparkspec.remote.planning import RemoteFindings
    from sparkspec.remote.session import Remote

STATE_DIR = STATE_FOLDER  # the project's state folder (kept beside the spec)


@contextmanager
def _collector_paused() -> Iterator[None]:
    """Loading a big spec and its lock makes a million small objects that either live on
    or die by reference count; the cyclic collector rescanning the growing pile cost a
    third of a no-op plan of 10,000 scenes. It runs again as soon as they are built."""
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


@dataclass
class Workspace:
    project: Project
    warnings: tuple[Diagnostic, ...]
    load_options: LoadOptions
    lock_path: Path
    lock: Lock
    lock_text: str
    state_dir: Path
    cache: Cache
    memo: DigestMemo
    remote: Remote | None = None  # the team's render cache, when one is configured and on
    remote_findings: RemoteFindings | None = None  # what the last plan learnt from it
    plan_warnings: list[str] = field(default_factory=list)  # for the command to print, once

    def fingerprint(self, options: PlanOptions) -> dict[str, str]:
        """What a saved plan was made from; apply refuses it when any of this changed."""
        return {
            "spec_sha256": self.project.spec_sha256,
            "vars_sha256": self.project.vars_sha256,
            "templates_sha256": self.project.templates_sha256,
            "lock_sha256": hashlib.sha256(self.lock_text.encode()).hexdigest(),
            "provider": self.project.provider.type,
        }

    def plan(self, options: PlanOptions = PlanOptions()) -> Plan:
        fingerprint = self.fingerprint(options)
        tasks = Tasks.listing(Journal(self.state_dir / "journal"), time.time())  # what apply collects
        if self.remote is None:
            plan = plan_changes(self.project, self.lock, self.cache, self.memo, options, fingerprint, tasks=tasks)
        else:
            from sparkspec.remote.planning import plan_with_remote

            plan, self.remote_findings = plan_with_remote(
                lambda view: plan_changes(self.project, self.lock, self.cache, self.memo, options, fingerprint,
                                          view, tasks),
                self.remote, self.plan_warnings, lock=self.lock)
        self.plan_warnings += [n for n in uncollected(plan.changes, tasks, self.project.provider.type,
                                                      whole=not options.targets)
                               if n not in self.plan_warnings]
        return plan

    def check_writable(self) -> None:
        """Before an apply: the folders it writes are folders, and writable. One line for the
        user now rather than the same failure for every scene later."""
        folders = ((self.project.root / self.project.output_dir, "the outputs (output_dir)"),
                   (self.state_dir, "its state"),
                   (self.cache.directory,
                    "the cache" if self.cache.directory == self.state_dir / "cache" else f"the cache ({CACHE_ENV})"))
        for folder, what in folders:
            # The folder, or a folder on the way to it (output_dir: out/sub with a file `out`).
            for place in (folder, *folder.parents):
                if place.exists():
                    if not place.is_dir():
                        raise DiskError(f"{place}: a file stands where sparkspec keeps {what}; move it away "
                                        "and run apply again")
                    break
            if folder.is_dir() and not os.access(folder, os.W_OK | os.X_OK):
                raise DiskError(f"{folder}: sparkspec may not write {what} there (read-only); make it "
                                "writable and run apply again")

    def close(self) -> None:
        self.memo.save()
        self.cache.close()


def open_workspace(spec: Path, options: LoadOptions = LoadOptions(), display: str | None = None,
                   environ: Mapping[str, str] = os.environ, remote: str | None = None,
                   remote_mode: str | None = None) -> Workspace:
    """`remote` and `remote_mode` are the CLI's `--remote off` and `--remote-mode MODE`."""
    with _collector_paused():
        loaded = load_project(spec, options, display)
        project = loaded.project
        state_dir = project.root / STATE_DIR
        path = lock_path(project.spec_path)
        lock, text = read_lock(path)
        check_lock_paths(lock, path.name, project.root)
    memo = DigestMemo(state_dir, project.root)
    from sparkspec.remote.settings import resolve_remote

    workspace = Workspace(project, loaded.warnings, options, path, lock, text, state_dir,
                          Cache(cache_dir(state_dir, environ), memo), memo)
    settings = resolve_remote(project.remote, environ, remote=remote, mode=remote_mode)
    if settings is not None:
        from sparkspec.errors import RemoteError
        from sparkspec.remote.session import Remote

        try:
            workspace.remote = Remote.connect(settings, state_dir, environ)
        except RemoteError as exc:  # the store's client refused its settings (no account, say)
            workspace.plan_warnings.append(f"{exc}; going on without it (`sparkspec push` uploads later)")
    return workspace
