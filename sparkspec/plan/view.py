"""A plan shown to people (text) and to programs (JSON, format_version 1)."""

from __future__ import annotations

import json
from typing import Any

from sparkspec.plan.model import Action, Change, Plan

FORMAT_VERSION = "1"


def summary(plan: Plan) -> dict[str, Any]:
    return {
        "render": plan.count(Action.CREATE, Action.UPDATE, Action.REPLACE),
        "reuse": plan.count(Action.REUSE),
        "restore": plan.count(Action.RESTORE),
        "pull": plan.count(Action.PULL),
        "wait": plan.count(Action.WAIT),
        "collect": plan.count(Action.COLLECT),
        "delete": plan.count(Action.DELETE),
        "stitch": plan.count(Action.STITCH),
        "unchanged": plan.count(Action.NOOP),
        "estimated_tokens": plan.estimated_tokens,
        "estimated_cost": _money(plan.estimated_cost),
    }


def _money(cost: float | None) -> float | None:
    """A cost to a millionth: a sum of token prices shows as 0.0496125, not 0.049612500000000004."""
    return None if cost is None else round(cost, 6)


def change_json(change: Change) -> dict[str, Any]:
    """A change as `--json` lists it; a scene's says which take it is (`scene.hero` is take 1;
    the lock's top-level record of a scene is its picked take's, which may be another)."""
    return {
        "address": change.address, "kind": change.kind, "id": change.id,
        **({"take": change.take} if change.kind == "scene" else {}),
        "action": change.action.value, "reasons": list(change.reasons), "key": change.key,
        "estimated_tokens": change.estimated_tokens, "estimated_cost": _money(change.estimated_cost),
    }


def plan_json(plan: Plan) -> dict[str, Any]:
    return {
        "format_version": FORMAT_VERSION,
        "changes": [change_json(c) for c in plan.changes],
        "summary": summary(plan),
    }


def dumps(plan: Plan) -> str:
    return json.dumps(plan_json(plan), sort_keys=False, ensure_ascii=False)


def summary_line(plan: Plan) -> str:
    """DESIGN's sentence first, as it is (`Plan: 2 to render (~217,800 tokens), 1 to reuse, 1 to
    delete, 5 unchanged.`), then what it has no place for: `Also 1 to restore, 1 to stitch; ~0.87
    to pay.` (only the parts that are not zero)."""
    s = summary(plan)
    line = (f"Plan: {s['render']} to render (~{s['estimated_tokens']:,} tokens), {s['reuse']} to reuse, "
            f"{s['delete']} to delete, {s['unchanged']} unchanged.")
    also = [text for count, text in (
        (s["collect"], f"{s['collect']} to collect (already paid)"),  # submitted by an earlier apply
        (s["restore"], f"{s['restore']} to restore"),
        (s["pull"], f"{s['pull']} to pull"),
        (s["wait"], f"{s['wait']} to wait for"),
        (s["stitch"], f"{s['stitch']} to stitch")) if count]
    money = f"~{s['estimated_cost']:,.2f} to pay" if s["estimated_cost"] else ""  # nothing to pay: not said
    if not also and not money:
        return line
    return f"{line} Also " + "; ".join(part for part in (", ".join(also), money) if part) + "."


def no_changes(plan: Plan) -> str:
    """A plan with nothing to do says so; a targeted one only of what its targets select (the
    rest of the spec may be out of date, as terraform warns of -target)."""
    if plan.options.targets:
        return (f"No changes for {', '.join(plan.options.targets)} (and what they need upstream): their renders "
                "match the spec. Only the targets were planned; the rest of the spec may still differ.")
    return "No changes. The renders match the spec."


def render_text(plan: Plan) -> str:
    lines = []
    shown = [c for c in plan.changes if c.action is not Action.NOOP]
    if not shown:
        lines.append(no_changes(plan))
    else:
        lines.append("sparkspec will:")
        lines.append("")
    for change in shown:
        take = f" take {change.take}" if change.take != 1 else ""
        head = f"  {change.action.symbol:>3} {change.kind}.{change.id}{take} ({change.action.value})"
        if change.action.renders:
            head += f"  ~{change.estimated_tokens:,} tokens"
            if change.estimated_cost is not None:
                head += f", ~{change.estimated_cost:,.2f}"
            if change.key is None:
                head += "  [key known after apply]"
        lines.append(head)
        # A multi-line prompt's diff goes on under its reason, indented with it.
        lines.extend(f"        {line}" if line else "" for reason in change.reasons for line in reason.split("\n"))
    lines.append("")
    lines.append(summary_line(plan))
    return "\n".join(lines)
