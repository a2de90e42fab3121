"""`sparkspec plan`: what apply would do, why, and at what cost, as text, JSON or markdown."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from sparkspec.commands.validate import print_diagnostics
from sparkspec.config.loader import LoadOptions
from sparkspec.plan import view
from sparkspec.plan.planfile import plan_target, save_plan
from sparkspec.plan.model import PlanOptions
from sparkspec.state.workspace import open_workspace


def run_plan(spec: str, options: LoadOptions, plan_options: PlanOptions, *, fmt: str, out: str | None,
             remote: str | None, remote_mode: str | None, echo: Callable[[str], None],
             warn: Callable[[str], None]) -> bool:
    """Print the plan (and save it to `out`); True when it has changes."""
    target = plan_target(out) if out is not None else None
    workspace = open_workspace(Path(spec), options, display=spec, remote=remote, remote_mode=remote_mode)
    print_diagnostics(workspace.warnings, warn)
    try:
        the_plan = workspace.plan(plan_options)
    finally:
        workspace.close()
    for warning in workspace.plan_warnings:
        warn(f"warning: {warning}")
    from sparkspec.state.applylock import running

    holder = running(workspace.state_dir)
    if holder is not None:
        warn(f"warning: another sparkspec {holder} is running on this project: this plan shows it mid-way "
             "(what that apply is rendering shows as to render or to collect); plan again once it is done")
    if fmt == "json":
        echo(view.dumps(the_plan))
    elif fmt == "markdown":
        from sparkspec.plan.markdown import render_markdown

        echo(render_markdown(the_plan, f"sparkspec plan: {workspace.project.name}").removesuffix("\n"))
    else:
        echo(view.render_text(the_plan))
    if target is not None:
        save_plan(target, spec, the_plan, options)
        if fmt == "text":
            echo(f"Saved the plan to {out}; run `sparkspec apply {out}` to carry it out.")
    return the_plan.has_changes
