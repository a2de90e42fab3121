"""apply on a real terminal (a pseudo-terminal): it shows the plan, asks, and draws progress."""

from __future__ import annotations

import fcntl
import os
import pty
import re
import select
import struct
import termios
import time

import pytest

from cli_runner import start_cli

from .conftest import Project

SPEC = """\
version: 1
provider: {type: local}
defaults: {resolution: 480p, frames: 29}
scenes:
  one: {prompt: "a kite over the dunes"}
  two: {first_frame: {scene: one}, prompt: "the kite climbs"}
"""


def converse(project: Project, answer: str, *args: str, end: str = "\r", columns: int = 120,
             **env_extra: str) -> tuple[int, str]:
    """Run `sparkspec apply` (or `args`) on a pty, answer its question, return (exit code, all it printed)."""
    main, secondary = pty.openpty()
    fcntl.ioctl(secondary, termios.TIOCSWINSZ, struct.pack("HHHH", 40, columns, 0, 0))
    env = dict(project.env, COLUMNS=str(columns), LINES="40", TERM="xterm", **env_extra)
    proc = start_cli(*(args or ("apply",)), cwd=project.root, env=env, stdin=secondary, stdout=secondary, stderr=secondary,
                     close_fds=True)
    os.close(secondary)
    seen = b""
    answered = False
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        ready, _, _ = select.select([main], [], [], 0.2)
        if ready:
            try:
                chunk = os.read(main, 4096)
            except OSError:  # the other side closed
                break
            if not chunk:
                break
            seen += chunk
        if not answered and b"Enter a value" in seen:
            os.write(main, answer.encode() + end.encode())
            answered = True
        if proc.poll() is not None and not ready:
            break
    os.close(main)
    code = proc.wait(timeout=30)
    shown = seen.decode(errors="replace")
    return code, shown if env_extra.get("NO_COLOR") else re.sub(r"\x1b\[[0-9;?]*[a-zA-Z]", "", shown)


@pytest.mark.slow  # about 1.8 s
def test_apply_asks_on_a_terminal_and_renders_on_yes(project: Project) -> None:
    project.write(SPEC)
    code, shown = converse(project, "yes")
    assert code == 0, shown
    assert "+ scene.one (create)" in shown
    assert "Only 'yes' is accepted" in shown
    assert "Traceback" not in shown
    assert "Apply complete: 2 rendered" in shown
    assert "one   ━" in shown and "completed" in shown  # rich's bars, per scene
    assert sorted(project.lock()["scenes"]) == ["one", "two"]


def test_apply_on_a_terminal_renders_nothing_unless_told_yes(project: Project) -> None:
    project.write(SPEC)
    code, shown = converse(project, "no")
    assert code == 1
    assert "apply cancelled; nothing was rendered" in shown
    assert not (project.root / "project.spark.lock").exists()
    assert not (project.root / "renders").exists()


def test_end_of_input_at_the_question_cancels_instead_of_interrupting(project: Project) -> None:
    """Ctrl-D at "Enter a value" said "Interrupted." and exited 130, as if Ctrl-C."""
    project.write(SPEC)
    code, shown = converse(project, "\x04", end="")
    assert code == 1, shown
    assert "apply cancelled; nothing was rendered" in shown and "Interrupted" not in shown
    assert not (project.root / "project.spark.lock").exists()


@pytest.mark.slow  # an apply, then show on a pty twice
def test_show_on_a_narrow_terminal_cuts_no_number_key_or_task_and_no_color_means_no_escapes(
        project: Project) -> None:
    """At 80 columns the tokens read "19,8…" and the key and task id were cut; NO_COLOR still
    wrote bold and italic escapes."""
    project.write(SPEC)
    project.run("apply", "--auto-approve")
    lock = project.lock()["scenes"]
    code, shown = converse(project, "", "show", columns=80, NO_COLOR="1")
    assert code == 0, shown
    assert "\x1b[" not in shown
    cells = re.sub(r"[\s│┃]", "", shown)  # a folded task id, put back together
    for record in lock.values():
        assert f"{record['tokens']:,}" in shown and record["key"][:12] in shown
        assert record["task_id"] in cells
    assert "…" not in shown.split("model")[0]
