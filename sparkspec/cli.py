"""The command line: parse options, call one core function, map the result to an exit code.

Heavy modules are imported inside the commands so `sparkspec --help` stays fast.
This is the one error boundary: a SparkspecError prints its message and exits 1;
anything else writes a log and exits 3.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

import click
from click.core import ParameterSource

if TYPE_CHECKING:
    from pathlib import Path

    from sparkspec.plan.model import PlanOptions
    from sparkspec.config.loader import LoadOptions

F = TypeVar("F", bound=Callable[..., Any])
DEFAULT_SPEC = "project.spark.yaml"
EXIT_ERROR, EXIT_CHANGES, EXIT_INTERNAL, EXIT_INTERRUPTED = 1, 2, 3, 130


def _path(name: str) -> Path:
    from pathlib import Path  # not at import time: `sparkspec --help` has no use for it

    return Path(name)


def _a_number(ctx: click.Context, param: click.Parameter, value: float | None) -> float | None:
    """FloatRange lets `nan` through, and a budget of nan is no budget: every comparison is false."""
    if value is not None and value != value:
        raise click.BadParameter("nan is not a number")
    return value


def spec_options(func: F) -> F:
    options = [
        click.option("-f", "--file", "spec", default=DEFAULT_SPEC, show_default=True,
                     help="The spec file."),
        click.option("--var", "variables", multiple=True, metavar="K=V",
                     help="Set a template variable (repeatable; beats --var-file and the spec's vars)."),
        click.option("--var-file", "var_files", multiple=True, metavar="FILE",
                     help="A YAML file of variables (repeatable; later files win)."),
        click.option("--provider", type=click.Choice(["spark", "ark", "local"]),
                     help="Render with this provider instead of the spec's."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def plan_options(func: F) -> F:
    func = click.option("--replace", "replace", multiple=True, metavar="ID",
                        help="Render this scene (or take: hero.take2) again even if nothing changed; a sequence: stitch it again.")(func)
    return click.option("--target", "targets", multiple=True, metavar="ID",
                        help="Only this scene or sequence, with what it needs upstream.")(func)


def remote_options(func: F) -> F:
    """`--remote off` and `--remote-mode MODE`: the team's render cache for this run (section 9)."""
    func = click.option("--remote-mode", "remote_mode", type=click.Choice(["read-write", "read-only", "off"]),
                        help="read-only: use the team's renders, write nothing (beats SPARKSPEC_REMOTE_MODE).")(func)
    return click.option("--remote", "remote", type=click.Choice(["off"]),
                        help="`off`: leave the team's remote render cache alone for this run.")(func)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-C", "directory", type=click.Path(file_okay=False), metavar="DIR",
              help="Run as if started in DIR.")
@click.version_option(package_name="sparkspec")
def cli(directory: str | None) -> None:
    """sparkspec: terraform for AI video.

    Keep prompts, parameters and the scene graph in project.spark.yaml; `plan` shows
    what would render and what it costs; `apply` renders only what changed.
    """
    if directory:
        try:
            os.chdir(directory)
        except OSError as exc:
            raise click.UsageError(f"-C {directory}: {exc.strerror}") from None


def _load_options(variables: tuple[str, ...], var_files: tuple[str, ...],
                  provider: str | None) -> LoadOptions:
    from sparkspec.config.loader import LoadOptions

    return LoadOptions(tuple(variables), tuple(var_files), provider)


def _warn(line: str) -> None:
    click.echo(line, err=True)


def _plan_options(targets: tuple[str, ...], replace: tuple[str, ...]) -> PlanOptions:
    """An id may be given as the plan prints it (`scene.intro`, `sequence.final`), as terraform
    takes an address: ids hold no dot, so the prefix is dropped."""
    from sparkspec.plan.model import PlanOptions

    def ids(given: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(dict.fromkeys(g.split(".", 1)[1] if g.startswith(("scene.", "sequence.")) else g
                                   for g in given))

    addressed = tuple((flag, kind, name) for flag, given in (("--target", targets), ("--replace", replace))
                      for kind, _, name in (g.partition(".") for g in given) if kind in ("scene", "sequence") and name)
    return PlanOptions(ids(targets), ids(replace), addressed)


@cli.command()
@spec_options
@click.argument("files", nargs=-1, type=click.Path(dir_okay=False))
def validate(spec: str, variables: tuple[str, ...], var_files: tuple[str, ...], provider: str | None,
             files: tuple[str, ...]) -> None:
    """Check the spec: syntax, schema, templates, images and the scene graph.

    With FILES (as the pre-commit hook passes them), check the specs they belong to: a spec
    file itself, or the nearest project.spark.yaml above a template.
    """
    from sparkspec.commands.validate import validate_files, validate_spec

    options = _load_options(variables, var_files, provider)
    if not files:
        validate_spec(spec, options, click.echo, _warn)
    elif not validate_files(files, DEFAULT_SPEC, options, _warn, click.echo):
        sys.exit(EXIT_ERROR)


@cli.command()
@spec_options
@plan_options
@click.option("--format", "fmt", type=click.Choice(["text", "json", "markdown"]), default=None,
              help="text (default), json (one object) or markdown (a pull-request comment).")
@click.option("--json", "as_json", is_flag=True, help="Same as --format json.")
@click.option("--out", "out", type=click.Path(dir_okay=False), help="Save the plan for `apply FILE`.")
@click.option("--detailed-exitcode", is_flag=True, help="Exit 0 with no changes, 2 with changes, 1 on error.")
@remote_options
def plan(spec: str, variables: tuple[str, ...], var_files: tuple[str, ...], provider: str | None,
         targets: tuple[str, ...], replace: tuple[str, ...], fmt: str | None, as_json: bool, out: str | None,
         detailed_exitcode: bool, remote: str | None, remote_mode: str | None) -> None:
    """Show what apply would render, why, and at what cost."""
    from sparkspec.commands.plan import run_plan

    if as_json and fmt not in (None, "json"):
        raise click.UsageError(f"--json and --format {fmt} disagree; pass one of them")
    changes = run_plan(spec, _load_options(variables, var_files, provider), _plan_options(targets, replace),
                       fmt="json" if as_json else fmt or "text", out=out, remote=remote,
                       remote_mode=remote_mode, echo=click.echo, warn=_warn)
    if detailed_exitcode and changes:
        sys.exit(EXIT_CHANGES)


def _refused_event(exc: BaseException) -> None:
    """`apply --json`'s last line when the apply stops before it starts: a `done` event with
    `ok` false and the error (the diagnostics of a spec that does not validate). stderr keeps
    the usual message."""
    import json

    from sparkspec.errors import DiskError, SpecError

    event: dict[str, Any] = {"event": "done", "ok": False, "completed": 0, "failed": 0}
    if isinstance(exc, SpecError):
        event["error"] = str(exc)
        event["diagnostics"] = [str(d) for d in sorted(exc.diagnostics, key=lambda d: (d.file, d.line, d.column))]
    else:
        event["error"] = str(DiskError.from_os(exc) if isinstance(exc, OSError) else exc)
    try:
        click.echo(json.dumps(event, sort_keys=True))
    except OSError:  # stdout gone: stderr still says it
        pass


@cli.command()
@click.argument("planfile", required=False, type=click.Path(dir_okay=False))
@spec_options
@plan_options
@click.option("--auto-approve", is_flag=True, help="Apply without asking.")
@click.option("--parallelism", type=click.IntRange(1, 64), help="Renders in flight at once.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON lines of events.")
@click.option("--fail-fast", is_flag=True, help="Stop submitting after the first failed render.")
@click.option("--max-tokens", type=click.IntRange(min=0), metavar="N",
              help="Budget: refuse a plan estimated over N tokens; stop submitting at N reported.")
@click.option("--max-cost", type=click.FloatRange(min=0), metavar="X", callback=_a_number,
              help="Budget in money (needs provider.price_per_million_tokens).")
@click.option("--no-wait", is_flag=True, help="Skip scenes another machine is rendering instead of waiting.")
@remote_options
def apply(planfile: str | None, spec: str, variables: tuple[str, ...], var_files: tuple[str, ...],
          provider: str | None, targets: tuple[str, ...], replace: tuple[str, ...], auto_approve: bool,
          parallelism: int | None, as_json: bool, fail_fast: bool, max_tokens: int | None,
          max_cost: float | None, no_wait: bool, remote: str | None, remote_mode: str | None) -> None:
    """Render what changed, reuse what the cache has, and write the lock."""
    from sparkspec.commands.apply import run_apply
    from sparkspec.errors import SparkspecError

    spec_given = click.get_current_context().get_parameter_source("spec") is not ParameterSource.DEFAULT
    try:
        code = run_apply(planfile=planfile, spec=spec, load_options=_load_options(variables, var_files, provider),
                         plan_options=_plan_options(targets, replace), auto_approve=auto_approve,
                         parallelism=parallelism, as_json=as_json, fail_fast=fail_fast, spec_given=spec_given,
                         max_tokens=max_tokens, max_cost=max_cost,
                         remote=remote, remote_mode=remote_mode, wait=not no_wait)
    except (SparkspecError, OSError) as exc:
        if as_json:  # a reader of the events learns the apply ended, and why, as from any other end
            _refused_event(exc)
        raise
    if code:
        sys.exit(code)


@cli.command()
@click.option("-f", "--file", "spec", default=DEFAULT_SPEC, show_default=True, help="The spec file.")
def show(spec: str) -> None:
    """Print the lock as a table."""
    from sparkspec.commands.show import show_lock

    show_lock(_path(spec))


@cli.command(name="graph")
@spec_options
@click.option("--format", "fmt", type=click.Choice(["text", "dot", "mermaid"]), default="text",
              show_default=True)
def graph_command(spec: str, variables: tuple[str, ...], var_files: tuple[str, ...], provider: str | None,
                  fmt: str) -> None:
    """Print the scene graph."""
    from sparkspec.commands.graph import graph_text

    click.echo(graph_text(spec, _load_options(variables, var_files, provider), fmt, _warn))


@cli.command()
def schema() -> None:
    """Print the JSON Schema of project.spark.yaml."""
    from sparkspec.config.schema import schema_text

    click.echo(schema_text(), nl=False)


@cli.command()
@click.option("-f", "--file", "spec", default=DEFAULT_SPEC, show_default=True, help="The spec file.")
@click.option("--dry-run", is_flag=True, help="Only list what would be dropped.")
def gc(spec: str, dry_run: bool) -> None:
    """Drop cache entries and blobs that no lock refers to."""
    from sparkspec.commands.gc import collect

    for line in collect(_path(spec), dry_run=dry_run):
        click.echo(line)


@cli.command()
@click.option("-f", "--file", "spec", default=DEFAULT_SPEC, show_default=True, help="The spec file to write.")
def init(spec: str) -> None:
    """Write a starter project that validates and renders offline."""
    from sparkspec.commands.init import write_starter

    for line in write_starter(_path(spec), spec):
        click.echo(line)


@cli.command(name="push")
@spec_options
@remote_options
def push_command(spec: str, variables: tuple[str, ...], var_files: tuple[str, ...], provider: str | None,
                 remote: str | None, remote_mode: str | None) -> None:
    """Upload the renders the lock refers to (and queued uploads) that the remote lacks."""
    from sparkspec.commands.push import push

    lines, complete = push(_path(spec), _load_options(variables, var_files, provider), remote, remote_mode,
                           display=spec)
    for line in lines:
        click.echo(line)
    if not complete:
        sys.exit(EXIT_ERROR)


@cli.command(name="pull")
@spec_options
@remote_options
def pull_command(spec: str, variables: tuple[str, ...], var_files: tuple[str, ...], provider: str | None,
                 remote: str | None, remote_mode: str | None) -> None:
    """Fill renders/ with what the lock refers to, from the local cache or the remote."""
    from sparkspec.commands.pull import pull

    lines, complete = pull(_path(spec), _load_options(variables, var_files, provider), remote, remote_mode,
                           display=spec)
    for line in lines:
        click.echo(line)
    if not complete:
        sys.exit(EXIT_ERROR)


@cli.group(name="remote")
def remote_group() -> None:
    """The team's render cache: status, verify, gc."""


@remote_group.command(name="status")
@spec_options
@remote_options
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def remote_status(spec: str, variables: tuple[str, ...], var_files: tuple[str, ...], provider: str | None,
                  remote: str | None, remote_mode: str | None, as_json: bool) -> None:
    """Counts and bytes of the lock's renders: local only, remote only, both."""
    from sparkspec.commands.remote import status_lines

    for line in status_lines(_path(spec), _load_options(variables, var_files, provider), remote, remote_mode,
                             as_json):
        click.echo(line)


@remote_group.command(name="verify")
@spec_options
@remote_options
@click.option("--deep", is_flag=True, help="Download every blob and hash it again.")
def remote_verify(spec: str, variables: tuple[str, ...], var_files: tuple[str, ...], provider: str | None,
                  remote: str | None, remote_mode: str | None, deep: bool) -> None:
    """Check the remote's entries and blobs for the lock's renders (exit 1 on a problem)."""
    from sparkspec.commands.remote import verify_lines

    lines, sound = verify_lines(_path(spec), _load_options(variables, var_files, provider), remote,
                                remote_mode, deep)
    for line in lines:
        click.echo(line)
    if not sound:
        sys.exit(EXIT_ERROR)


@remote_group.command(name="gc")
@spec_options
@remote_options
@click.option("--dry-run", is_flag=True, help="Only list what would be deleted.")
@click.option("--grace", default="7d", show_default=True, metavar="DURATION",
              help="Keep anything younger than this (7d, 12h, 30m, 600s).")
def remote_gc(spec: str, variables: tuple[str, ...], var_files: tuple[str, ...], provider: str | None,
              remote: str | None, remote_mode: str | None, dry_run: bool, grace: str) -> None:
    """Delete remote entries and blobs that no pushed lock refers to, past a grace period."""
    from sparkspec.commands.remote import gc_lines, parse_grace

    for line in gc_lines(_path(spec), _load_options(variables, var_files, provider), remote, remote_mode,
                         dry_run, parse_grace(grace)):
        click.echo(line)


@cli.command(name="merge-lock")
@click.argument("base", type=click.Path(dir_okay=False))
@click.argument("ours", type=click.Path(dir_okay=False))
@click.argument("theirs", type=click.Path(dir_okay=False))
def merge_lock(base: str, ours: str, theirs: str) -> None:
    """Merge project.spark.lock as a git merge driver (`sparkspec merge-lock %O %A %B`)."""
    from sparkspec.commands.merge_lock import merge_lock_files

    for line in merge_lock_files(_path(base), _path(ours), _path(theirs)):
        click.echo(line, err=True)


@cli.command()
@spec_options
def doctor(spec: str, variables: tuple[str, ...], var_files: tuple[str, ...], provider: str | None) -> None:
    """Check the API key and the API's answer, and the team's remote, without paying for anything."""
    from sparkspec.commands.doctor import diagnose, diagnose_remote, doctor_config
    from sparkspec.state.workspace import STATE_DIR

    given = click.get_current_context().get_parameter_source("spec") is not ParameterSource.DEFAULT
    config, remote = doctor_config(_path(spec), _load_options(variables, var_files, provider), spec, given)
    report = diagnose(config)
    diagnose_remote(report, remote, _path(spec).parent / STATE_DIR)
    for line in report.lines:
        click.echo(line)
    if not report.ok:
        sys.exit(EXIT_ERROR)


def run() -> None:
    """The `sparkspec` process (console script, `python -m sparkspec`): `main`, and then an
    exit without the interpreter's teardown (`_exit`)."""
    from sparkspec.leanimports import skip_unused

    skip_unused()
    closed = _stand_in_for_closed_streams()
    try:
        main()
    except SystemExit as exc:
        _exit(_closed_output(exc.code) if closed else exc.code)
    _exit(_closed_output(0) if closed else 0)


def _stand_in_for_closed_streams() -> bool:
    """A standard stream closed before sparkspec started (`sparkspec plan >&-`) is None in
    Python: /dev/null stands in, so the command runs (an apply's renders are recorded) instead
    of failing on its first line of output. Whether standard output was closed."""
    closed = sys.stdout is None
    for name in ("stdout", "stderr"):
        if getattr(sys, name) is None:
            setattr(sys, name, open(os.devnull, "w", encoding="utf-8"))  # noqa: SIM115 - for the process's life
    return closed


def _closed_output(status: str | int | None) -> str | int | None:
    """The exit status of a command whose standard output was closed from the start: an error,
    said once, as when its reader goes away midway."""
    try:
        click.echo("error: standard output is closed, so nothing sparkspec printed was seen (the command "
                   "itself ran)", err=True)
    except OSError:
        pass
    return status if status not in (None, 0) else EXIT_ERROR


def _output_closed() -> None:
    """Standard output's reader went away: say so once on stderr (the exit is 1), and point
    stdout at /dev/null so that nothing fails on it again on the way out."""
    from sparkspec.apply.progress import silence

    silence(sys.stdout)
    try:
        click.echo("error: the output was closed before sparkspec finished (its reader exited)", err=True)
    except OSError:
        pass


def _output_fails() -> bool:
    """Standard output cannot take what is waiting for it."""
    try:
        sys.stdout.flush()
    except (OSError, ValueError):
        return True
    return False


def _raised_writing_output(exc: BaseException) -> bool:
    """`exc` came from printing (click's echo, rich, a progress line): unbuffered output
    (PYTHONUNBUFFERED) fails as it is written, and leaves nothing for `_output_fails` to find."""
    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    if tb is None:
        return False
    module = str(tb.tb_frame.f_globals.get("__name__", ""))
    return module.startswith(("click.", "rich.")) or module == "sparkspec.apply.progress"


def _output_failed(exc: BaseException) -> None:
    """Standard output failed (a full disk, `ulimit -f`): said in one line on stderr, and
    pointed at /dev/null, so that the way out does not fail on it again."""
    from sparkspec.apply.progress import silence

    silence(sys.stdout)
    try:
        click.echo(f"error: cannot write the output: {getattr(exc, 'strerror', None) or exc}", err=True)
    except (OSError, ValueError):
        pass


def _exit(status: str | int | None) -> NoReturn:
    """Leave the process once its work is done, without the interpreter's teardown: freeing
    every module and object took 0.25-0.3 s after an apply had finished (benchmarks/RESULTS.md,
    session 10), on every command. Everything sparkspec writes is fsync'd and closed by the
    time `main` returns; what else the teardown would do is done here: the atexit handlers
    run and the standard streams are flushed. When a thread of sparkspec's is still at work,
    or a stream cannot be flushed, the interpreter's own exit runs instead, as before.

    A call to the team's remote still blocked in its thread is the exception: nobody waits for
    it any more (the plan's remote budget ran out, Ctrl-C during a pull), and the ordinary exit
    would hold the process until its timeout, minutes on a store that accepts and never answers.
    (Not in `main`, which may run inside another program, a test runner.)"""
    import atexit
    import threading

    store = sys.modules.get("sparkspec.remote.store")
    abandoned = store is not None and store.calls_running() > 0
    # The store's threads are never work to wait for: with no call running they only wait for
    # the next one (the interpreter's exit spent 0.03-0.05 s joining them after every pull).
    working = any(t is not threading.main_thread() and not t.daemon and t.is_alive() and
                  not (store is not None and store.is_store_thread(t)) for t in threading.enumerate())
    if working and not abandoned:
        raise SystemExit(status)
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except BrokenPipeError:  # `sparkspec plan | head`: what was printed last never reached its reader
        _output_closed()
        status = EXIT_ERROR
    except (OSError, ValueError) as exc:  # a full disk, a file size limit: said in one line
        _output_failed(exc)
        status = EXIT_ERROR
    if status is not None and not isinstance(status, int):
        print(status, file=sys.stderr)  # as the interpreter does with sys.exit("message")
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):  # what the handlers printed
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(status if isinstance(status, int) else EXIT_ERROR if status else 0)


def main() -> None:
    from sparkspec.errors import SparkspecError, SpecError

    stdout = sys.stdout
    try:
        cli.main(standalone_mode=False, prog_name="sparkspec")
    except SystemExit:
        # click meets a closed pipe (EPIPE) by wrapping the streams and exiting 1 without a
        # word: say why the exit is 1.
        if sys.stdout is not stdout:
            _output_closed()
            sys.exit(EXIT_ERROR)
        raise
    except SpecError as exc:
        for diagnostic in sorted(exc.diagnostics, key=lambda d: (d.file, d.line, d.column)):
            click.echo(str(diagnostic), err=True)
        sys.exit(EXIT_ERROR)
    except SparkspecError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(EXIT_ERROR)
    except click.exceptions.Abort:
        click.echo("Interrupted.", err=True)
        sys.exit(EXIT_INTERRUPTED)
    except KeyboardInterrupt:
        click.echo("Interrupted.", err=True)
        sys.exit(EXIT_INTERRUPTED)
    except click.exceptions.NoArgsIsHelpError as exc:  # `sparkspec`, `sparkspec remote`: the help asked for
        click.echo(exc.ctx.get_help())
        sys.exit(0)
    except click.ClickException as exc:  # one line, as every other error: not click's usage block
        ctx = getattr(exc, "ctx", None)
        hint = f" (see `{ctx.command_path} --help`)" if isinstance(exc, click.UsageError) and ctx is not None else ""
        click.echo(f"error: {exc.format_message()}{hint}", err=True)
        sys.exit(exc.exit_code if exc.exit_code != 2 else EXIT_ERROR)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except SystemExit:
        raise
    except BrokenPipeError:  # `sparkspec ... | head`: the reader has what it wanted; say why the exit is 1
        _output_closed()
        sys.exit(EXIT_ERROR)
    except OSError as exc:  # the world's fault (a full disk, a read-only folder), not a bug
        from sparkspec.errors import DiskError

        if exc.filename is None and (_output_fails() or _raised_writing_output(exc)):
            _output_failed(exc)  # standard output on a full disk, or past `ulimit -f`
        else:
            click.echo(f"error: {DiskError.from_os(exc)}", err=True)
        sys.exit(EXIT_ERROR)
    except RuntimeError as exc:
        # Python 3.11's Path.resolve() reports a symlink that leads back to itself this way
        # (3.13: OSError ELOOP): the world's, wherever a path met it.
        loop = re.match(r"Symlink loop from '(.*)'$", str(exc))
        if loop is None:
            _internal_error()
        else:
            click.echo(f"error: {loop[1]}: a symlink loop (a link that leads back to itself); remove it or "
                       "point it at a file, and run the command again", err=True)
        sys.exit(EXIT_ERROR if loop is not None else EXIT_INTERNAL)
    except Exception:  # noqa: BLE001 - the boundary for bugs: log, don't dump on the user
        _internal_error()
        sys.exit(EXIT_INTERNAL)


def _internal_error() -> None:
    """The exception being handled, a bug of sparkspec's: its traceback to a log file, one
    line to the user."""
    import tempfile
    import traceback

    fd, log = tempfile.mkstemp(prefix="sparkspec-crash-", suffix=".log")
    with os.fdopen(fd, "w") as stream:
        traceback.print_exc(file=stream)
    click.echo(f"sparkspec: internal error; details in {log}. Please report it.", err=True)
