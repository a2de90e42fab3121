"""The Jinja2 environment that renders the project's templates: sandboxed, bounded, and
loading files from the project folder only. Imported (with Jinja) only when a template
needs Jinja; see `jinja_env`."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jinja2
from jinja2.sandbox import SandboxedEnvironment

from sparkspec.config.jinja_env import inside


def environment(root: Path) -> BoundedEnvironment:
    env = BoundedEnvironment(loader=ProjectLoader(root), undefined=jinja2.StrictUndefined, autoescape=False)
    # A prompt is part of its render's key: one that differs from run to run makes every plan
    # render it again, and every apply pay again. Jinja's two sources of chance are refused.
    env.filters["random"] = _refused("the `random` filter",
                                     "pick the value with a variable (--var) or a matrix instead")
    env.globals["lipsum"] = _refused("`lipsum()`", "write the placeholder text into the template")
    env.globals["range"] = env.bounded_range
    return env


def _refused(what: str, instead: str) -> Callable[..., Any]:
    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise jinja2.exceptions.TemplateRuntimeError(
            f"{what} makes the prompt differ on every run, so every apply would render it and pay "
            f"again; {instead}")
    return refuse


class ProjectLoader(jinja2.BaseLoader):
    """Loads template files from the project folder and nowhere else."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.read: dict[str, str] = {}  # template name -> sha256 of its source, as loaded

    def get_source(
        self, environment: jinja2.Environment, template: str
    ) -> tuple[str, str, Callable[[], bool]]:
        path = inside(self.root, template)
        if path is None:
            raise jinja2.TemplateNotFound(f"{template} (outside the project folder)")
        try:
            source = path.read_text(encoding="utf-8-sig")  # a BOM (Notepad) is no part of the prompt
        except (OSError, UnicodeDecodeError) as exc:
            raise jinja2.TemplateNotFound(f"{template} ({_reason(exc)})") from None
        mtime = path.stat().st_mtime_ns
        self.read[template] = hashlib.sha256(source.encode()).hexdigest()
        return source, str(path), lambda: path.stat().st_mtime_ns == mtime


def _reason(exc: Exception) -> str:
    if isinstance(exc, FileNotFoundError):
        return "no such file"
    if isinstance(exc, UnicodeDecodeError):
        return "not UTF-8 text"
    return getattr(exc, "strerror", None) or str(exc)


MAX_PRODUCT = 100_000  # characters or items a `*` may make; a prompt is advised at 500 characters
MAX_RANGE_STEPS = 1_000_000  # items every `range` of one render may make together: loops in loops


class BoundedEnvironment(SandboxedEnvironment):
    """The sandbox refuses unsafe attributes; this also bounds what `*` and `**` can build,
    so `{{ 'ab' * 400000000 }}` is an error, not gigabytes and minutes (Jinja's sandbox
    already bounds `range`)."""

    intercepted_binops = frozenset({"*", "**"})
    loader: ProjectLoader
    range_steps = MAX_RANGE_STEPS  # left for the render under way (`start_render` sets it again)

    def start_render(self) -> None:
        self.range_steps = MAX_RANGE_STEPS

    def bounded_range(self, *args: int) -> range:
        """Jinja's sandboxed `range` (at most 100,000 items), and every range of one render
        together at most MAX_RANGE_STEPS: `range` in `range` is not a hang of `plan`."""
        from jinja2.sandbox import safe_range

        made = safe_range(*args)
        self.range_steps -= len(made)
        if self.range_steps < 0:
            raise jinja2.exceptions.SecurityError(
                f"the template's loops make more than {MAX_RANGE_STEPS:,} steps in all (a range in a range?)")
        return made

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        if operator == "*":
            for seq, times in ((left, right), (right, left)):
                if isinstance(seq, (str, list, tuple)) and isinstance(times, int) \
                        and len(seq) * times > MAX_PRODUCT:
                    raise jinja2.exceptions.SecurityError(
                        f"repeating a value {times:,} times makes more than {MAX_PRODUCT:,} items")
        if operator == "**" and isinstance(right, int) and abs(right) > 1000:
            raise jinja2.exceptions.SecurityError(f"an exponent of {right:,} is too large")
        return super().call_binop(context, operator, left, right)
