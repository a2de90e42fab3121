"""`sparkspec apply`: take the apply lock, plan (or load a saved plan), confirm, run the engine.

Exit codes: 0 done, 1 a render failed or was skipped, 130 interrupted (the renders
still running remotely are named; the next apply collects them from the journal).
"""

from __future__ import annotations

import os
import posixpath
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

import click

from sparkspec.apply.budget import BudgetMeter, check_plan, effective
from sparkspec.state.applylock import apply_lock
from sparkspec.apply.progress import JsonReporter, LiveReporter, PlainReporter
from sparkspec.errors import AuthError, SparkspecError
from sparkspec.plan.model import Action, Plan, PlanOptions
from sparkspec.plan.planfile import check_fresh, check_options, load_plan
from sparkspec.plan.view import render_text
from sparkspec.config.loader import LoadOptions
from sparkspec.state.lockfile import Lock
from sparkspec.state.workspace import Workspace, open_workspace

# The engine, asyncio and the providers are imported only when there is something to do,
# so a no-op apply costs what a no-op plan costs.
if TYPE_CHECKING:
    from sparkspec.apply.engine import ApplyResult, Engine
    from sparkspec.apply.workers import Early
    from sparkspec.review.sheetid import KnownSheet
    from sparkspec.review.contact import Strip
    from sparkspec.providers.base import Downloaded, Provider, RenderRequest, TaskStatus

EXIT_OK, EXIT_FAILED, EXIT_INTERRUPTED = 0, 1, 130
# A scene awaited from another machine may fall to this one (its claim died): it needs a provider.
RENDERS = (Action.CREATE, Action.UPDATE, Action.REPLACE, Action.WAIT, Action.COLLECT)
FETCH_WORKERS_ENV = "SPARKSPEC_FETCH_WORKERS"
# Below this many renders, starting worker processes (~0.4 s of CPU each) costs more than it saves.
MANY_RENDERS = 32
FILE_HOSTS = ("spark", "ark")  # provider types whose outputs a fetch worker can download
ROOT_WAIT = 30.0  # seconds for the lock's root after an apply's uploads


def run_apply(*, planfile: str | None, spec: str, load_options: LoadOptions, plan_options: PlanOptions,
              auto_approve: bool, parallelism: int | None, as_json: bool, fail_fast: bool,
              max_tokens: int | None = None, max_cost: float | None = None,
              environ: Mapping[str, str] = os.environ, stdin: TextIO | None = None,
              stdout: TextIO | None = None, spec_given: bool = False, remote: str | None = None,
              remote_mode: str | None = None, wait: bool = True) -> int:
    stdin = stdin or sys.stdin
    stdout = stdout or sys.stdout
    saved = None
    if planfile is not None:
        saved = load_plan(Path(planfile))
        check_options(saved, Path(planfile), spec if spec_given else None, load_options, plan_options)
        spec, load_options, plan_options = saved.spec, saved.load_options, saved.plan_options
    workspace = open_workspace(Path(spec), load_options, display=spec, environ=environ, remote=remote,
                               remote_mode=remote_mode)
    for warning in sorted(workspace.warnings, key=lambda d: (d.file, d.line, d.column)):
        click.echo(str(warning), err=True)
    early: Early | None = None
    try:
        workspace.check_writable()
        with apply_lock(workspace.state_dir, cache=workspace.cache.directory):
            early = early_workers(workspace, plan_options, environ)
            _remove_left_behind(workspace)
            plan = workspace.plan(plan_options)
            for note in workspace.plan_warnings:
                click.echo(f"warning: {note}", err=True)
            if saved is not None and planfile is not None:
                check_fresh(saved, plan, Path(planfile))
            if not as_json:
                click.echo(render_text(plan), file=stdout)
            budget = effective(workspace.project.budget, max_tokens, max_cost)
            check_plan(budget, plan)
            _check_outputs(workspace, plan)
            if not plan.has_changes:
                page = _review(workspace, None, refresh=True)
                if workspace.remote is not None:  # uploads an earlier apply could not make
                    from sparkspec.remote.applying import RemoteApply

                    RemoteApply.push_queued(workspace.remote, workspace.cache,
                                            JsonReporter(stdout) if as_json else PlainReporter(stdout))
                    if workspace.remote.writable and workspace.remote.queue.root_pending():
                        _register_root(workspace)  # an earlier apply uploaded, then was cut short
                if as_json:
                    JsonReporter(stdout)({"event": "done", "ok": page, "completed": 0, "failed": 0,
                                          "skipped": 0, "reused": 0, "restored": 0, "pulled": 0,
                                          "deleted": 0, "stitched": 0, "tokens": 0})
                return EXIT_OK if page else EXIT_FAILED
            # A saved plan was reviewed when it was made, as in terraform.
            if saved is None and not auto_approve:
                _confirm(stdin)
            from sparkspec.commands.gc import register_project

            provider = _provider(workspace, plan, environ, parallelism, wait)
            register_project(workspace.cache.directory, workspace.lock_path)
            meter = BudgetMeter(budget, workspace.project.provider.price_per_million_tokens,
                                planned_tokens=plan.estimated_tokens, planned_cost=plan.estimated_cost or 0.0)
            return _execute(workspace, plan, provider, parallelism or workspace.project.provider.parallelism,
                            as_json, fail_fast, stdout, meter, wait, fetch_worker_count(plan, environ),
                            early=early)
    finally:
        if early is not None:
            early.discard()
        workspace.close()


def _check_outputs(workspace: Workspace, plan: Plan) -> None:
    """A folder where the plan puts a render: refused before anything is submitted (a new
    scene's was found only after its render was paid for). A sequence's is not: a stitch costs
    nothing, and one that fails fails that sequence alone, after the renders."""
    from sparkspec.errors import DiskError
    from sparkspec.plan.planner import output_paths

    project = workspace.project
    for change in plan.changes:
        if change.kind != "scene" or change.action in (Action.NOOP, Action.DELETE):
            continue
        scene = project.scenes.get(change.id)
        paths = output_paths(project, change.id, change.take, scene.pick) if scene is not None else ()
        for rel in paths:
            target = project.root / rel
            if target.is_dir():
                raise DiskError(f"{target}: a folder stands where {change.address}'s output goes; "
                                "move it away and run apply again")
            if target.exists() and not target.is_file():
                raise DiskError(f"{target}: a FIFO, a socket or a device stands where {change.address}'s output "
                                "goes; remove it and run apply again")


def _remove_left_behind(workspace: Workspace) -> None:
    """The temporary files a killed apply left beside the lock and in the output folder (a
    copy into renders/ cut short can be a whole video): they are sparkspec's, and with the
    apply lock held no other sparkspec is writing them."""
    from sparkspec.fsutil import remove_left_behind
    from sparkspec.review.before import FOLDER as BEFORE

    project = workspace.project
    output = project.root / project.output_dir
    for folder in (project.root, output, output / BEFORE):
        remove_left_behind(folder)


def _confirm(stdin: TextIO) -> None:
    if not stdin.isatty():
        raise SparkspecError("apply asks before it changes anything and there is no terminal to ask on; "
                             "pass --auto-approve, or apply a saved plan (`sparkspec plan --out FILE`)")
    click.echo("\nDo you want to apply these changes? Only 'yes' is accepted.")
    click.echo("  Enter a value: ", nl=False)
    answer = stdin.readline()  # "" at end of input (Ctrl-D): a "no", not an interrupt; Ctrl-C is one
    if not answer:
        click.echo()
    if answer.strip() != "yes":
        raise SparkspecError("apply cancelled; nothing was rendered")


def _provider(workspace: Workspace, plan: Plan, environ: Mapping[str, str],
              parallelism: int | None = None, wait: bool = True) -> Provider | None:
    """The provider, when the plan renders (reuse, restore, delete need no API key);
    `--parallelism` stands for the spec's (the local renderer renders that many at once).
    With --no-wait, a plan whose only renders are scenes another machine renders submits
    nothing as planned: without an API key it still applies, and such a scene whose claim
    ended fails with the key's error instead of rendering here."""
    renders = [c for c in plan.changes if c.kind == "scene" and c.action in RENDERS]
    if not renders:
        return None
    import dataclasses

    from sparkspec.providers import make_provider

    config = workspace.project.provider
    if parallelism is not None:
        config = dataclasses.replace(config, parallelism=parallelism)
    try:
        return make_provider(config, workspace.state_dir, environ)
    except AuthError as exc:
        if wait or any(c.action is not Action.WAIT for c in renders):
            raise
        return Unavailable(config.type, str(exc))


class Unavailable:
    """A provider that cannot be made (no API key), for an apply that plans to submit nothing:
    whatever would submit fails its scene with why, and stops the other submissions."""

    paid = True  # it stands for the API's provider
    poll_waits = False

    def __init__(self, type: str, reason: str) -> None:
        self.type, self.reason = type, reason

    async def submit(self, request: RenderRequest) -> TaskStatus:
        raise AuthError(self.reason)

    async def poll(self, task_id: str, locator: str | None = None) -> TaskStatus:
        raise AuthError(self.reason)

    async def download(self, url: str, dest: Path) -> Downloaded:
        raise AuthError(self.reason)

    async def aclose(self) -> None:
        return None


def fetch_worker_count(plan: Plan, environ: Mapping[str, str]) -> int:
    """How many processes fetch and check the renders' outputs (`apply.workers`), started
    with the apply: SPARKSPEC_FETCH_WORKERS when set (0: none); else, for an apply of
    MANY_RENDERS renders or more, `_spare_cores()`. (Until session 21 they started only once
    fetches piled up on the apply's own thread: those fetches cost it PyAV's and Pillow's
    imports, and 100 scenes 0.2-0.3 s; benchmarks/RESULTS.md.)"""
    value = environ.get(FETCH_WORKERS_ENV, "").strip()
    if value:
        if not value.isdigit() or int(value) > 16:
            raise SparkspecError(f"{FETCH_WORKERS_ENV}={value!r}: expected a number of processes from 0 to 16 "
                                 f"(0: fetch on the apply's own thread)")
        return int(value)
    renders = sum(1 for c in plan.changes if c.kind == "scene" and c.action in RENDERS)
    return _spare_cores() if renders >= MANY_RENDERS else 0


def _spare_cores() -> int:
    """Workers for a machine: one a core but the apply's own, at least two and at most 4;
    none on one core. The apply's thread keeps about 40 % of a core busy at zero render
    latency, and a worker checks a scene in about 9 ms of CPU: on two cores one worker left
    the rest idle, and two took 1,000 scenes in 9.1 s against 10.2-10.7 (session 21; in
    session 8, when the apply's own thread did twice the work, a second one only competed)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return min(4, max(2, cores - 1)) if cores >= 2 else 0


def early_workers(workspace: Workspace, options: PlanOptions, environ: Mapping[str, str]) -> Early | None:
    """Fetch workers started before the plan, so that their imports (~0.3 s) run beside it
    rather than in front of the first renders' outputs: for an apply of MANY_RENDERS scenes
    or more that the lock has never recorded (an apply that will start them anyway), through
    an API whose outputs a worker can fetch. The plan decides: workers it does not need are
    discarded. Not with SPARKSPEC_FETCH_WORKERS set, nor for a targeted apply."""
    project = workspace.project
    if environ.get(FETCH_WORKERS_ENV, "").strip() or options.targets or project.provider.type not in FILE_HOSTS:
        return None
    recorded = workspace.lock.scenes
    if sum(1 for scene in project.scenes if scene not in recorded) < MANY_RENDERS or not (count := _spare_cores()):
        return None
    from sparkspec.apply.workers import Early, spawn

    try:
        return Early(spawn(count))
    except OSError:  # the engine tries again, and says why if it cannot
        return None


def _execute(workspace: Workspace, plan: Plan, provider: Provider | None, parallelism: int, as_json: bool,
             fail_fast: bool, stdout: TextIO, meter: BudgetMeter | None = None,
             wait: bool = True, fetch_workers: int = 0, early: Early | None = None) -> int:
    import asyncio

    from sparkspec.apply.engine import Engine, running_remotely

    total = sum(1 for c in plan.changes if c.kind == "scene" and c.action is not Action.NOOP)
    reporter: JsonReporter | PlainReporter | LiveReporter
    if as_json:
        reporter = JsonReporter(stdout)
    elif stdout.isatty():
        reporter = LiveReporter(total)
    else:
        reporter = PlainReporter(stdout)
    previous = workspace.lock
    remote = workspace.remote
    if remote is not None and remote.writable and any(c.kind == "scene" and c.action in RENDERS for c in plan.changes):
        remote.queue.mark_root()  # before the first upload: if this apply is cut short, the next registers it
    engine = Engine(workspace, plan, provider, reporter, parallelism, fail_fast=fail_fast, meter=meter,
                    remote_wait=wait, fetch_workers=fetch_workers, early_workers=early)
    try:
        result = asyncio.run(_drive(engine, provider))
    finally:
        reporter.close()
    if getattr(reporter, "closed", False):
        click.echo("warning: the output was closed during the apply (its reader exited); the apply went on to "
                   "the end without printing, and `sparkspec show` or `plan` tells where things stand", err=True)
    strips = {**engine.runner.strips, **(engine.remote.strips if engine.remote is not None else {})}
    page = _review(workspace, previous, known=engine.sheet, not_rendered={**result.skipped, **result.failed},
                   strips=strips)
    _left_in_old_folders(workspace, previous)
    if engine.remote is not None and (engine.remote.pushed or engine.remote.remote.queue.root_pending()):
        _register_root(workspace)
    if result.interrupted:
        running = running_remotely(workspace.state_dir)
        reporter({"event": "done", "ok": False, "interrupted": True, "running": running,
                  "cancelled": result.cancelled,
                  "completed": len(result.completed), "failed": len(result.failed),
                  "skipped": len(result.skipped), "reused": len(result.reused),
                  "restored": len(result.restored), "pulled": len(result.pulled), "deleted": len(result.deleted),
                  "stitched": len(result.stitched), "tokens": result.tokens})
        if not as_json:
            click.echo("Interrupted: no new renders were submitted.", err=True)
            if result.cancelled:
                click.echo("Cancelled while still queued (nothing was paid for them): "
                           + ", ".join(result.cancelled), err=True)
            if running:
                click.echo("Still rendering remotely (the next `sparkspec apply` collects them, "
                           "at no new cost): " + ", ".join(running), err=True)
        return EXIT_INTERRUPTED
    # Failures were reported as they happened, once each.
    return EXIT_OK if result.ok and page else EXIT_FAILED


def _review(workspace: Workspace, previous: Lock | None, refresh: bool = False,
            known: KnownSheet | None = None, not_rendered: Mapping[str, str] | None = None,
            strips: Mapping[str, Strip] | None = None) -> bool:
    """renders/index.html and contact.png; False when the page could not be written (said
    here, on stderr): the apply then exits 1, though its renders and the lock are in place
    (a full disk, a folder where the page goes: the world's errors fail the command).
    `known`: a teammate's contact sheet (used when it is the one this lock shows); one decoded
    here goes to a writable remote. `strips`: the contact sheet's strips the apply made as it
    fetched."""
    from sparkspec.errors import MediaError
    from sparkspec.review import write_review
    from sparkspec.review.contact import SHEET

    project = workspace.project
    output = project.root / project.output_dir
    try:
        if refresh:
            # Nothing rendered: the page is made again and written only if its text changed (a
            # description, the name or a price edited; a before/ file deleted by hand), and the
            # contact sheet only when it is not the one recorded for this lock.
            written = write_review(workspace, None, contact_sheet=not _sheet_is_current(workspace))
            if output / SHEET not in written:
                return True
        else:
            write_review(workspace, previous, known=known, not_rendered=not_rendered, strips=strips)
    except MediaError as exc:  # a clip not there yet (a targeted apply on a clone), one that does not decode
        click.echo(f"warning: {exc}", err=True)
        return True
    except SparkspecError as exc:
        click.echo(f"error: {exc}", err=True)
        return False
    if workspace.remote is not None and workspace.remote.writable:
        from sparkspec.commands.push import NOT_PUSHED, push_sheet

        note = push_sheet(workspace, workspace.remote, fetched=known)
        if note is not None and note.startswith(NOT_PUSHED):
            click.echo(f"warning: {note}", err=True)
    return True


def _left_in_old_folders(workspace: Workspace, previous: Lock) -> None:
    """output_dir moved: the earlier folder's outputs are left where they are (only today's
    folder is ever deleted from), and the user is told once, not left to find them."""
    from sparkspec.state.lockpaths import in_output_folder

    project = workspace.project
    files = [f for r in previous.scenes.values() for t in r.take_records().values() for f in (t.video, t.last_frame)]
    files += [s.video for s in previous.sequences.values()]
    folders = sorted({posixpath.dirname(f.path) for f in files
                      if not in_output_folder(f.path, project.output_dir) and (project.root / f.path).is_file()})
    if folders:
        click.echo(f"warning: output_dir is now {project.output_dir}; the outputs in "
                   f"{', '.join(f + '/' for f in folders)} stay there (sparkspec deletes only in today's "
                   "output_dir): remove them when you no longer need them", err=True)


def _sheet_is_current(workspace: Workspace) -> bool:
    """renders/contact.png is the sheet recorded for this lock, unchanged (or none is wanted)."""
    from sparkspec.review.contact import SHEET
    from sparkspec.review.sheetid import recorded_sheet, sheet_digest

    project = workspace.project
    digest = sheet_digest(project, workspace.lock)
    return digest is None or recorded_sheet(workspace.state_dir / "review", project.root / project.output_dir / SHEET,
                                            digest) is not None


def _register_root(workspace: Workspace) -> None:
    """After uploading renders: the lock's root on the remote, as `push` writes it, so `remote
    gc` keeps what a team that never runs `push` paid for. A failure is a warning; the root
    stays marked in the push queue for the next apply or `push`."""
    import asyncio

    from sparkspec.remote.sync import register_lock_root

    remote = workspace.remote
    assert remote is not None
    try:
        asyncio.run(asyncio.wait_for(register_lock_root(remote, workspace), ROOT_WAIT))
        remote.queue.root_registered()
    except (SparkspecError, TimeoutError) as exc:
        click.echo(f"warning: remote {remote.display}: the lock's root was not registered ({exc or 'no answer in time'}); "
                   "the next apply or `sparkspec push` registers it (`remote gc` keeps only what roots name)", err=True)


async def _drive(engine: Engine, provider: Provider | None) -> ApplyResult:
    """Run the engine; Ctrl-C stops new submissions and leaves running tasks in the journal.
    SIGTERM (a CI job cancelled, `kill`) is a Ctrl-C: CI runners send it, then SIGKILL."""
    import asyncio
    import signal

    loop = asyncio.get_running_loop()
    main = asyncio.current_task()
    assert main is not None
    signals = (signal.SIGINT, signal.SIGTERM)

    def interrupt() -> None:
        engine.stop_submitting = "interrupted"
        engine.result.interrupted = True
        for number in signals:
            loop.add_signal_handler(number, interrupt_again)
        main.cancel()

    hurried: list[asyncio.Future[Any]] = []  # the cancelling of queued tasks, once begun

    def interrupt_again() -> None:
        # Through the loop, as the first: the interpreter's own handler raised nothing while
        # the signal went to another thread and this one slept in select() until the answer.
        for number in signals:  # a third is the default one
            loop.remove_signal_handler(number)
        for waited in (*engine.runner.creating, *hurried):  # no longer awaited
            waited.cancel()

    try:
        for number in signals:
            loop.add_signal_handler(number, interrupt)
    except (NotImplementedError, RuntimeError, ValueError):  # not the main thread
        pass
    try:
        return await engine.run()
    except asyncio.CancelledError:
        if not engine.result.interrupted:
            raise
        from sparkspec.apply.cancel import cancel_queued
        from sparkspec.state.journal import Journal

        if engine.runner.creating:  # the wait can be long (a slow API): said, not a silent hang
            sent = len(engine.runner.creating)
            engine.emit({"event": "warning", "message": (
                f"interrupted: waiting for the answer to {sent} create{'s' if sent > 1 else ''} already sent, so that "
                f"{'their paid tasks go' if sent > 1 else 'its paid task goes'} in the journal for the next apply "
                "to collect; Ctrl-C again stops at once")})
        await engine.runner.settle_creates()  # a create on the wire at Ctrl-C: its task goes in the journal
        engine.journal_vanished()  # before the running tasks are named from it
        if provider is not None:
            cancelling = asyncio.ensure_future(cancel_queued(provider, Journal(engine.workspace.state_dir / "journal")))
            hurried.append(cancelling)
            await asyncio.wait({cancelling})  # a second Ctrl-C ends it: what it did not cancel stays journalled
            if not cancelling.cancelled():
                engine.result.cancelled = cancelling.result()
        return engine.result
    finally:
        for number in signals:
            loop.remove_signal_handler(number)
        await engine.runner.settle_creates()  # not under them: the clients close after
        if provider is not None:
            await provider.aclose()
