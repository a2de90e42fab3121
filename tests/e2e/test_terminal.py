"""apply on a real terminal (a pseudo-terminal): it shows the plan, asks, and draws progress."""

from __future__ import annotations

import os
import pty
import re
import select
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


def converse(project: Project, answer: str) -> tuple[int, str]:
    """Run `sparkspec apply` on a pty, answer its question, return (exit code, all it printed)."""
    main, secondary = pty.openpty()
    env = dict(project.env, COLUMNS="120", LINES="40", TERM="xterm")
    proc = start_cli("apply", cwd=project.root, env=env, stdin=secondary, stdout=secondary, stderr=secondary,
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
            os.write(main, answer.encode() + b"\r")
            answered = True
        if proc.poll() is not None and not ready:
            break
    os.close(main)
    code = proc.wait(timeout=30)
    return code, re.sub(r"\x1b\[[0-9;?]*[a-zA-Z]", "", seen.decode(errors="replace"))


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
