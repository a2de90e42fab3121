"""The command line around the core: init, -C, schema, --help, version, bad options. The first
apply and --help run as a user's shell runs them; the rest in-process (the `cli` fixture)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cli_runner import Cli, Run, run_cli


def sparkspec(cwd: Path, *args: str) -> Run:
    return run_cli(*args, cwd=cwd)


@pytest.mark.slow  # about 3 s
def test_init_writes_a_starter_that_validates_and_renders_offline(tmp_path: Path) -> None:
    project = tmp_path / "odd: #name"
    project.mkdir()
    made = sparkspec(project, "init")
    assert made.returncode == 0, made.stderr
    assert (project / "project.spark.yaml").exists() and (project / ".gitignore").exists()
    assert sparkspec(project, "validate").returncode == 0
    applied = sparkspec(project, "apply", "--auto-approve", "--json")
    assert applied.returncode == 0, applied.stderr
    assert json.loads(applied.stdout.splitlines()[-1])["completed"] == 2
    assert (project / "renders/film.mp4").exists()


def test_init_never_overwrites(cli: Cli, tmp_path: Path) -> None:
    (tmp_path / "project.spark.yaml").write_text("mine\n")
    refused = cli("init", cwd=tmp_path)
    assert refused.returncode == 1
    assert "already exists" in refused.stderr
    assert (tmp_path / "project.spark.yaml").read_text() == "mine\n"


def test_init_of_another_spec_names_it_in_the_next_commands(cli: Cli, tmp_path: Path) -> None:
    """The hint said `sparkspec plan`, which then found no project.spark.yaml and sent the user
    back to `init`."""
    made = cli("init", "-f", "film two.spark.yaml", cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    assert "Next: `sparkspec plan -f 'film two.spark.yaml'`, then `sparkspec apply -f 'film two.spark.yaml'`." in made.stdout
    assert cli("plan", "-f", "film two.spark.yaml", cwd=tmp_path).returncode == 0
    assert "Next: `sparkspec plan`, then `sparkspec apply`." in cli("init", cwd=tmp_path / "sub" if
                                                                  (tmp_path / "sub").mkdir() is None else tmp_path).stdout


@pytest.mark.parametrize("existing, expected", [
    ("node_modules/\n", "node_modules/\n.sparkspec/\n"),
    ("node_modules/", "node_modules/\n.sparkspec/\n"),
    ("/.sparkspec\nrenders/\n", "/.sparkspec\nrenders/\n"),
])
def test_init_adds_the_state_folder_to_an_existing_gitignore(cli: Cli, tmp_path: Path, existing: str,
                                                             expected: str) -> None:
    """A .gitignore already there was left as it was: `git add -A` then committed the cache."""
    (tmp_path / ".gitignore").write_text(existing)
    made = cli("init", cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    assert (tmp_path / ".gitignore").read_text() == expected
    assert ("Added .sparkspec/ to" in made.stdout) == (existing != expected)


def test_dash_c_runs_elsewhere_and_names_a_missing_folder(cli: Cli, tmp_path: Path) -> None:
    (tmp_path / "p").mkdir()
    assert cli("-C", "p", "init", cwd=tmp_path).returncode == 0
    assert cli("-C", "p", "validate", cwd=tmp_path).returncode == 0
    missing = cli("-C", "nowhere", "validate", cwd=tmp_path)
    assert missing.returncode == 1 and "-C nowhere" in missing.stderr


def test_a_missing_spec_is_one_line_and_exit_1(cli: Cli, tmp_path: Path) -> None:
    for command in ("validate", "plan", "apply", "graph"):
        result = cli(command, cwd=tmp_path)
        assert result.returncode == 1
        assert result.stderr.strip().splitlines() == [
            "error: project.spark.yaml: no such file; run `sparkspec init` to start a project, or pass -f FILE"]


def test_help_lists_every_command_and_a_bad_option_exits_1(tmp_path: Path) -> None:
    shown = sparkspec(tmp_path, "--help")
    assert shown.returncode == 0
    for command in ("init", "validate", "plan", "apply", "show", "graph", "schema", "gc"):
        assert command in shown.stdout
    bad = sparkspec(tmp_path, "plan", "--frobnicate")
    assert bad.returncode == 1 and "No such option" in bad.stderr


def test_show_and_gc_before_any_apply(cli: Cli, tmp_path: Path) -> None:
    assert cli("init", cwd=tmp_path).returncode == 0
    shown = cli("show", cwd=tmp_path)
    assert shown.returncode == 0 and "nothing rendered yet" in shown.stdout
    collected = cli("gc", "--dry-run", cwd=tmp_path)
    assert collected.returncode == 0 and "nothing to drop" in collected.stdout
    assert not (tmp_path / ".sparkspec").exists()


def test_a_corrupt_lock_is_one_line_naming_it(cli: Cli, tmp_path: Path) -> None:
    assert cli("init", cwd=tmp_path).returncode == 0
    (tmp_path / "project.spark.lock").write_text('{"version": 1, "scenes": {')
    for command in ("plan", "apply", "show"):
        result = cli(command, *(["--auto-approve"] if command == "apply" else []), cwd=tmp_path)
        assert result.returncode == 1
        line, = result.stderr.strip().splitlines()
        assert line.startswith("error: project.spark.lock:1:") and "restore it from git" in line
    assert (tmp_path / "project.spark.lock").read_text() == '{"version": 1, "scenes": {'


# The process's exit (cli._exit): skips the interpreter's teardown, never the work before it.
EXIT = """
import atexit, sys, threading, time
from pathlib import Path
from sparkspec import cli
marks = Path(sys.argv[1])
def bye() -> None:
    marks.write_text(marks.read_text() + "atexit ")
    sys.stdout.write("bye")  # printed by a handler: flushed too
atexit.register(bye)
def late() -> None:
    time.sleep(0.3)
    marks.write_text(marks.read_text() + "thread ")
if sys.argv[2] == "thread":
    threading.Thread(target=late).start()
sys.stdout.write("x" * 200000)  # more than a pipe holds: only the exit's flush writes its tail
cli._exit(int(sys.argv[3]) if sys.argv[3].isdigit() else sys.argv[3])
"""


@pytest.mark.parametrize(("thread", "status", "code"), [("none", "2", 2), ("none", "0", 0), ("thread", "0", 0),
                                                        ("none", "a message", 1)])
def test_the_exit_flushes_runs_atexit_and_waits_for_a_working_thread(tmp_path: Path, thread: str, status: str,
                                                                      code: int) -> None:
    import subprocess
    import sys

    marks = tmp_path / "marks"
    marks.write_text("")
    proc = subprocess.run([sys.executable, "-c", EXIT, str(marks), thread, status], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == code, proc.stderr
    assert proc.stdout == "x" * 200000 + "bye"
    assert marks.read_text() == ("thread atexit " if thread == "thread" else "atexit ")
    assert proc.stderr == ("a message\n" if status == "a message" else "")


# A remote command leaves the store's thread pool idle: its threads wait for work that will not
# come, and must not send the exit through the interpreter's teardown (which joins them).
IDLE_STORE = """
import asyncio, sys, threading
from pathlib import Path
from sparkspec import cli
from sparkspec.remote.store import is_store_thread, open_store
from sparkspec.remote.settings import RemoteSettings
marks = Path(sys.argv[1])
threading._register_atexit(lambda: marks.write_text(marks.read_text() + "teardown "))
store = open_store(RemoteSettings(url="memory://idle"))
assert asyncio.run(store.head("nothing/here")) is None
assert any(is_store_thread(t) and t.is_alive() for t in threading.enumerate())
cli._exit(0)
"""


def test_idle_store_threads_do_not_hold_the_exit(tmp_path: Path) -> None:
    import subprocess
    import sys

    marks = tmp_path / "marks"
    marks.write_text("")
    proc = subprocess.run([sys.executable, "-c", IDLE_STORE, str(marks)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert marks.read_text() == ""  # threading's exit hooks never ran: os._exit, not the teardown


@pytest.mark.parametrize("command", [("show",), ("plan",), ("graph",)])
def test_a_command_whose_reader_is_gone_says_so_and_exits_1(tmp_path: Path, command: tuple[str, ...]) -> None:
    """`sparkspec show | head` exited 1 without a word (rich's own handling)."""
    import os
    import subprocess

    from cli_runner import cli_command

    (tmp_path / "project.spark.yaml").write_text('version: 1\nprovider: {type: local}\nscenes:\n  a: {prompt: "x"}\n')
    (tmp_path / "project.spark.lock").write_text('{"version": 1, "scenes": {}, "sequences": {}}\n')
    read, write = os.pipe()
    os.close(read)  # the reader is gone before anything is written
    try:
        proc = subprocess.run(cli_command(*command), cwd=tmp_path, stdout=write, stderr=subprocess.PIPE, text=True,
                              timeout=60)
    finally:
        os.close(write)
    assert proc.returncode == 1
    assert proc.stderr.strip() == "error: the output was closed before sparkspec finished (its reader exited)"


@pytest.mark.parametrize("command", [("show",), ("plan",), ("validate",), ("apply", "--auto-approve")])
@pytest.mark.parametrize("output", ["closed", "/dev/full"])
def test_standard_output_closed_or_on_a_full_disk_is_one_line_and_exit_1(tmp_path: Path, command: tuple[str, ...],
                                                                        output: str) -> None:
    """`sparkspec plan >&-` printed a traceback (sys.stdout is None), and `>/dev/full` Python's
    "Exception ignored" lines and exit 120."""
    import subprocess

    from cli_runner import cli_command

    (tmp_path / "project.spark.yaml").write_text(
        'version: 1\nprovider: {type: local}\ndefaults: {resolution: 480p, frames: 29}\nscenes:\n  a: {prompt: "x"}\n')
    if output == "closed":
        proc = subprocess.run(["sh", "-c", 'exec "$@" >&-', "sh", *cli_command(*command)], cwd=tmp_path,
                              stderr=subprocess.PIPE, text=True, timeout=120)
        said = "error: standard output is closed, so nothing sparkspec printed was seen (the command itself ran)"
    else:
        with open("/dev/full", "w") as full:
            proc = subprocess.run(cli_command(*command), cwd=tmp_path, stdout=full, stderr=subprocess.PIPE,
                                  text=True, timeout=120)
        said = "error: cannot write the output: No space left on device"
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr.strip().splitlines()[-1:] == [said], proc.stderr
    assert "Traceback" not in proc.stderr and "Exception ignored" not in proc.stderr
    if command[0] == "apply" and output == "closed":  # the command itself ran: its render is recorded
        assert (tmp_path / "renders" / "a.mp4").exists() and "a" in json.loads(
            (tmp_path / "project.spark.lock").read_text())["scenes"]


@pytest.mark.parametrize("args, message", [
    (("validate", "somedir"), "error: Invalid value for '[FILES]...': File 'somedir' is a directory. "
                              "(see `sparkspec validate --help`)"),
    (("-C", "nowhere", "plan"), "error: -C nowhere: No such file or directory (see `sparkspec --help`)"),
    (("plan", "--bogus"), "error: No such option '--bogus'"),
])
def test_a_usage_error_is_one_line(cli: Cli, tmp_path: Path, args: tuple[str, ...], message: str) -> None:
    (tmp_path / "somedir").mkdir()
    result = cli(*args, cwd=tmp_path)
    assert result.returncode == 1
    assert len(result.stderr.splitlines()) == 1 and result.stderr.startswith(message), result.stderr


@pytest.mark.parametrize("args", [(), ("remote",)])
def test_a_command_group_with_nothing_after_it_shows_its_help(cli: Cli, tmp_path: Path, args: tuple[str, ...]) -> None:
    """`sparkspec` alone printed "error: Usage: ..." and the whole help block as an error, exit 1."""
    result = cli(*args, cwd=tmp_path)
    assert result.returncode == 0 and result.stderr == ""
    assert result.stdout.startswith(f"Usage: sparkspec {' '.join(args)}".rstrip() + " [OPTIONS] COMMAND")
    assert "Commands:" in result.stdout


def test_a_file_in_place_of_the_state_folder_stops_gc_too(cli: Cli, tmp_path: Path) -> None:
    """gc said "The cache is empty; nothing to drop." (exit 0) where apply refused."""
    assert cli("init", cwd=tmp_path).returncode == 0
    (tmp_path / ".sparkspec").write_text("not a folder")
    for command in ("gc", "plan"):
        result = cli(command, cwd=tmp_path)
        assert result.returncode == 1 and result.stderr == (
            f"error: {tmp_path / '.sparkspec'}: a file stands where sparkspec keeps its state; move it away and "
            "run the command again\n"), (command, result.stderr)


def test_a_folder_inside_a_project_points_at_the_project_not_at_init(cli: Cli, tmp_path: Path) -> None:
    """From a subfolder, show said 'nothing rendered yet' (exit 0), gc 'the cache is empty', and
    plan advised `init`, which would start a second project inside the first."""
    assert cli("init", cwd=tmp_path).returncode == 0
    (tmp_path / "prompts").mkdir()
    for command in ("show", "plan", "gc", "validate"):
        result = cli(command, cwd=tmp_path / "prompts")
        assert result.returncode == 1, (command, result.stdout)
        assert result.stderr == (f"error: project.spark.yaml: no such file here; this folder is inside the project "
                                 f"at {tmp_path / 'project.spark.yaml'}: run sparkspec there, or pass -C {tmp_path}\n")
    assert not (tmp_path / "prompts" / ".sparkspec").exists()


@pytest.mark.parametrize("command, folder", [(["show"], "."), (["gc"], ".."), (["gc", "--dry-run"], "/")])
def test_a_folder_given_as_the_spec_is_an_error_naming_it(cli: Cli, tmp_path: Path, command: list[str],
                                                          folder: str) -> None:
    """`show -f .` was an internal error (exit 3), `gc -f .` said the cache was empty."""
    (tmp_path / "p").mkdir()
    run = cli(*command, "-f", folder, cwd=tmp_path / "p")
    assert run.returncode == 1, run.stdout + run.stderr
    assert run.stderr == f"error: {folder}: is a folder, not a spec file; pass -f FILE (the project's .spark.yaml)\n"


def test_doctor_of_a_spec_that_is_not_there_says_so(cli: Cli, tmp_path: Path) -> None:
    """It checked the default spark provider instead, which the user's spec may not use."""
    run = cli("doctor", "-f", "nope.yaml", cwd=tmp_path)
    assert run.returncode == 1
    assert run.stderr.startswith("error: nope.yaml: no such file") and "SPARK_API_KEY" not in run.stdout


def test_a_file_on_the_way_to_a_nested_output_dir_stops_apply_before_it_renders(cli: Cli, tmp_path: Path) -> None:
    """`output_dir: out/sub` with a file `out`: apply rendered (and, on the API, paid), then failed
    with a line a scene."""
    (tmp_path / "project.spark.yaml").write_text(
        "version: 1\nprovider: {type: local}\noutput_dir: out/sub\ndefaults: {resolution: 480p, frames: 29}\n"
        "scenes:\n  a: {prompt: a kite}\n  b: {prompt: a boat}\n")
    (tmp_path / "out").write_text("notes")
    result = cli("apply", "--auto-approve", cwd=tmp_path)
    assert result.returncode == 1 and result.stderr == (
        f"error: {tmp_path / 'out'}: a file stands where sparkspec keeps the outputs (output_dir); move it away "
        "and run apply again\n"), result.stderr
    assert not (tmp_path / ".sparkspec" / "local").exists()  # nothing rendered


@pytest.mark.parametrize("where", ["renders/a.mp4", "recorded", "project.spark.lock", ".sparkspec/digests.json",
                                   "p.txt"])
def test_a_fifo_where_a_file_goes_is_an_error_not_a_hang(tmp_path: Path, where: str) -> None:
    """Reading a FIFO waits for a writer: plan and apply hung (and Ctrl-C could not stop a
    worker thread stuck in its open)."""
    import os

    (tmp_path / "p.txt").write_text("a cup")
    (tmp_path / "project.spark.yaml").write_text(
        "version: 1\nprovider: {type: local}\ndefaults: {resolution: 480p, frames: 29}\nscenes:\n  a: {prompt_file: p.txt}\n")
    if where in ("recorded", ".sparkspec/digests.json"):
        assert run_cli("apply", "--auto-approve", cwd=tmp_path, timeout=120).code == 0
    path = tmp_path / ("renders/a.mp4" if where == "recorded" else where)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)
    os.mkfifo(path)
    for command in (("plan",), ("apply", "--auto-approve")):
        result = run_cli(*command, cwd=tmp_path, timeout=60)
        # A memo it cannot read is rebuilt; a plan does not look where a new render goes.
        if where == ".sparkspec/digests.json" or (where == "renders/a.mp4" and command == ("plan",)):
            assert result.code == 0, result.err
            continue
        assert result.code == 1, (command, result.out, result.err)
        assert "not a regular file" in result.err or "a FIFO, a socket or a device" in result.err, result.err
    assert not (tmp_path / "renders" / "a.mp4").is_file() or where == ".sparkspec/digests.json"


def test_a_review_page_that_cannot_be_written_fails_the_apply_and_the_next_one_writes_it(tmp_path: Path) -> None:
    """A folder where renders/index.html goes (or a full disk) was a warning and exit 0."""
    (tmp_path / "project.spark.yaml").write_text(
        'version: 1\nprovider: {type: local}\ndefaults: {resolution: 480p, frames: 29}\nscenes:\n  a: {prompt: "x"}\n')
    (tmp_path / "renders" / "index.html").mkdir(parents=True)
    failed = run_cli("apply", "--auto-approve", cwd=tmp_path, timeout=120)
    assert failed.code == 1, failed.err
    assert "cannot write the review page" in failed.err and "the renders and the lock are fine" in failed.err
    assert "a" in json.loads((tmp_path / "project.spark.lock").read_text())["scenes"]
    (tmp_path / "renders" / "index.html").rmdir()
    again = run_cli("apply", "--auto-approve", cwd=tmp_path, timeout=120)
    assert again.code == 0, again.err
    assert (tmp_path / "renders" / "index.html").is_file()
