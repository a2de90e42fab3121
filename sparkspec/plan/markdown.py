"""A plan as GitHub-flavoured Markdown, to post as a pull-request comment.

A summary line, a table of the changes (no-ops are counted, not listed) and each
prompt's diff in a collapsible `<details>` (once for all the takes of a scene). Plain
text only: no ANSI codes, and anything that came from the spec is escaped so a prompt
cannot break the table or inject markup into the comment.
"""

from __future__ import annotations

import html
import re

from sparkspec.plan.model import Action, Change, Plan
from sparkspec.plan.view import no_changes, summary_line

_PROMPT = "prompt: "
_REMOVED = re.compile(r"\[-(.*?)-\]", re.S)
_ADDED = re.compile(r"\{\+(.*?)\+\}", re.S)


def render_markdown(plan: Plan, title: str | None = None) -> str:
    shown = [c for c in plan.changes if c.action is not Action.NOOP]
    lines = [f"### {_cell(title)}" if title else "### sparkspec plan", "",
             f"**{summary_line(plan)}**", ""]
    if not shown:
        lines.append(no_changes(plan))
        return "\n".join(lines) + "\n"
    lines += ["| | action | scene | reasons | tokens | cost |",
              "| --- | --- | --- | --- | ---: | ---: |"]
    # (scene, diff) -> the prompts before and after, and the takes it is the diff of
    diffs: dict[tuple[str, str], tuple[tuple[str, str], list[str]]] = {}
    for change in shown:
        reasons = []
        for reason in change.reasons:
            if reason.startswith(_PROMPT):
                diff = reason[len(_PROMPT):]
                diffs.setdefault((f"{change.kind}.{change.id}", diff), (change.prompts or _sides(diff), []))[1].append(
                    change.address)
                reasons.append("prompt changed (diff below)")
            else:
                reasons.append(reason)
        lines.append(f"| `{change.action.symbol}` | {change.action.value} | `{change.address}` | "
                     f"{'<br>'.join(_cell(r) for r in reasons)} | {_tokens(change)} | {_cost(change)} |")
    for (address, diff), ((old, new), takes) in diffs.items():  # the takes of a scene share its prompt: one diff
        which = f" ({len(takes)} takes)" if len(takes) > 1 else ""
        lines += ["", f"<details><summary>Prompt diff: <code>{html.escape(address)}</code>{which}</summary>", "",
                  _fenced("diff", "\n".join([*(f"- {line}" for line in old.split("\n")),
                                              *(f"+ {line}" for line in new.split("\n"))])),
                  "", _fenced("text", diff), "", "</details>"]
    return "\n".join(lines) + "\n"


def _tokens(change: Change) -> str:
    if not change.action.renders:
        return ""
    text = f"~{change.estimated_tokens:,}"
    return text + " (key after apply)" if change.key is None else text


def _cost(change: Change) -> str:
    if not change.action.renders or change.estimated_cost is None:
        return ""
    return f"~{change.estimated_cost:,.2f}"


def _cell(text: str) -> str:
    """One table cell: no markup, no pipes, no line breaks from the spec."""
    escaped = html.escape(text, quote=False).replace("|", "&#124;")
    escaped = re.sub(r"([\\`*_\[\]#~])", r"\\\1", escaped)
    return " ".join(escaped.split())


def _sides(word_diff: str) -> tuple[str, str]:
    """The old and the new prompt back out of git's --word-diff=plain notation, for a change
    that does not carry them (the notation is ambiguous when a prompt holds `[-` or `{+`)."""
    old = _ADDED.sub("", word_diff)
    old = _REMOVED.sub(r"\1", old)
    new = _REMOVED.sub("", word_diff)
    new = _ADDED.sub(r"\1", new)
    return _lines(old), _lines(new)


def _lines(text: str) -> str:
    """Runs of spaces made one (the notation adds and drops some), its lines kept."""
    return "\n".join(" ".join(line.split()) for line in text.strip().split("\n"))


def _fenced(language: str, body: str) -> str:
    """A code block whose fence is longer than any run of backticks in it."""
    longest = max((len(run) for run in re.findall(r"`+", body)), default=0)
    fence = "`" * max(3, longest + 1)
    return f"{fence}{language}\n{body}\n{fence}"
