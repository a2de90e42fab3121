"""`sparkspec plan --format markdown`: a pull-request comment (summary, table, prompt diffs)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from cli_runner import run_main
from test_plan import SPEC, edit, fake_apply

from sparkspec.plan.markdown import render_markdown
from sparkspec.plan.model import Action, Change, Plan

BASE = """\
version: 1
name: mdtest
provider: {type: local, price_per_million_tokens: 4.2}
defaults: {resolution: 720p, ratio: "1:1", seed: 7}
scenes:
  intro:
    prompt: "A cup on a marble counter"
  pour:
    first_frame: {scene: intro}
    prompt: "Coffee pours"
  logo:
    prompt: "The logo"
sequences:
  final: {scenes: [intro, pour, logo]}
"""


@pytest.fixture
def root(tmp_path: Path) -> Path:
    project = tmp_path / "project"
    project.mkdir()
    (project / SPEC).write_text(BASE)
    return project


def test_markdown_plan_has_summary_table_and_prompt_diff(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake_apply(root)
    edit(root, "A cup on a marble counter", "A mug | on a *marble* counter")
    code, out, err = run_main(["plan", "--format", "markdown"], root, monkeypatch)
    assert code == 0, err
    assert "\x1b" not in out
    lines = out.splitlines()
    assert lines[0] == "### sparkspec plan: mdtest"
    assert lines[2] == "**Plan: 2 to render (~217,800 tokens), 0 to reuse, 0 to delete, 1 unchanged. " \
                       "Also 1 to stitch; ~0.91 to pay.**"
    rows = [line for line in lines if line.startswith("| `")]
    assert rows[0] == "| `~` | update | `scene.intro` | prompt changed (diff below) | ~108,900 | ~0.46 |"
    assert rows[1] == ("| `~` | update | `scene.pour` | upstream intro re-renders | ~108,900 (key after apply) "
                       "| ~0.46 |")
    assert rows[2].startswith("| `>` | stitch | `sequence.final` | member intro re-renders<br>")
    assert len(rows) == 3  # logo is a no-op: counted, not listed
    for row in rows:  # every row has its six cells: nothing from the spec broke the table
        assert len(re.findall(r"(?<!\\)\|", row)) == 7
    details = out[out.index("<details>"):]
    assert "<summary>Prompt diff: <code>scene.intro</code></summary>" in details
    assert "```diff\n- A cup on a marble counter\n+ A mug | on a *marble* counter\n```" in details
    assert details.rstrip().endswith("</details>")


def test_json_flag_is_format_json_and_they_must_agree(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    a = run_main(["plan", "--json"], root, monkeypatch)
    b = run_main(["plan", "--format", "json"], root, monkeypatch)
    assert a[0] == b[0] == 0 and a[1] == b[1]
    code, _, err = run_main(["plan", "--json", "--format", "markdown"], root, monkeypatch)
    assert code == 1 and "disagree" in err


def test_no_changes(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake_apply(root)
    code, out, _ = run_main(["plan", "--format", "markdown"], root, monkeypatch)
    assert code == 0
    assert "No changes. The renders match the spec." in out and "| ---" not in out


def test_a_prompt_cannot_close_the_fence_or_inject_html() -> None:
    nasty = "prompt: a [-```</details><script>x</script>-] {+b+}"
    plan = Plan((Change("scene", "s", Action.UPDATE, (nasty, "seed: <1> -> 2"), "k", 10, None),))
    out = render_markdown(plan)
    assert "````diff" in out  # the fence outgrows the prompt's backticks
    assert "seed: &lt;1&gt; -&gt; 2" in out
    assert "<script>" not in out.split("````diff")[0]


def test_a_whitespace_change_is_shown_and_lines_are_kept() -> None:
    """A prompt whose only change was a second space showed nothing marked (text) and two
    identical lines (markdown); a multi-line prompt was flattened onto one line."""
    from sparkspec.plan.prompt_diff import word_diff

    spaced = word_diff("line one\nline two", "line  one\nline two")
    assert spaced == "line[-·-]{+··+}one\nline two"
    lines = word_diff("a kite\nover the dunes", "a kite\nover the sea")
    plan = Plan((Change("scene", "s", Action.UPDATE, (f"prompt: {spaced}",), "k", 10, None,
                        prompts=("line one\nline two", "line  one\nline two")),
                 Change("scene", "t", Action.UPDATE, (f"prompt: {lines}",), "k2", 10, None)))
    out = render_markdown(plan)
    assert "- line one\n- line two\n+ line  one\n+ line two" in out  # the prompts as they are
    assert "- a kite\n- over the dunes\n+ a kite\n+ over the sea" in out


@pytest.mark.parametrize("old, new, diff", [
    ("plain text to video", "plain text to  video now", "plain text to[-·-]{+··+}video {+now+}"),
    ("the cat sat", "the cat  sat on", "the cat[-·-]{+··+}sat {+on+}"),
    ("a b", "b", "[-a-] b"),
    ("b", "a b", "{+a+} b"),
    ("a b c", "a c", "a [-b-] c"),
    ("a b", "a\tb c", "a[-·-]{+→+}b {+c+}"),
    ("  lead", "lead", "[-··-]lead"),
    ("", "new words", "{+new words+}"),
])
def test_the_word_diff_marks_each_change_once_and_every_changed_gap(old: str, new: str, diff: str) -> None:
    """A space added beside a new word printed `to  {+video+} [-video-] {+now+}`: a word said
    added and removed, and the spacing that changed the key unmarked."""
    from sparkspec.plan.prompt_diff import word_diff

    assert word_diff(old, new) == diff


def test_the_markdown_shows_the_prompts_themselves_not_read_back_from_the_diff(
        root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (root / SPEC).write_text(BASE.replace("The logo", "array [-1-] and {+x+} literal"))
    fake_apply(root)
    edit(root, "array [-1-] and", "array [-2-] and")
    code, out, err = run_main(["plan", "--format", "markdown"], root, monkeypatch)
    assert code == 0, err
    assert "- array [-1-] and {+x+} literal\n+ array [-2-] and {+x+} literal" in out


def test_takes_on_a_colour_terminal_one_diff_a_scene_and_no_ansi(root: Path) -> None:
    # Written to a pseudo-terminal with FORCE_COLOR set, as a CI log or a shell would.
    import os
    import pty

    from cli_runner import start_cli

    edit(root, '    prompt: "A cup on a marble counter"\n', '    prompt: "A cup on a marble counter"\n'
                                                          '    takes: 3\n')
    fake_apply(root)
    edit(root, "A cup on a marble counter", "A mug on a marble counter")
    main, secondary = pty.openpty()
    env = {k: v for k, v in os.environ.items() if k not in ("NO_COLOR", "TERM")}
    proc = start_cli("plan", "--format", "markdown", cwd=root, env={**env, "FORCE_COLOR": "1", "TERM": "xterm"},
                     stdin=secondary, stdout=secondary, stderr=secondary, close_fds=True)
    os.close(secondary)
    seen = b""
    while True:
        try:
            chunk = os.read(main, 65536)
        except OSError:  # the other side closed
            break
        if not chunk:
            break
        seen += chunk
    os.close(main)
    assert proc.wait(timeout=60) == 0
    out = seen.decode().replace("\r\n", "\n")
    assert "\x1b" not in out
    rows = [line for line in out.splitlines() if line.startswith("| `")]
    assert [row.split(" | ")[2] for row in rows] == ["`scene.intro`", "`scene.intro.take2`", "`scene.intro.take3`",
                                                    "`scene.pour`", "`sequence.final`"]
    assert out.count("<details>") == 1
    assert "<summary>Prompt diff: <code>scene.intro</code> (3 takes)</summary>" in out
