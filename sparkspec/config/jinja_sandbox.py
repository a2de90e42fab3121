"""The Jinja2 environment that renders the project's templates: sandboxed, bounded, and
loading files from the project folder only. Imported (with Jinja) only when a template
needs Jinja; see `jinja_env`."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jinja2
from jinja2 import nodes
from jinja2.compiler import CodeGenerator, Frame
from jinja2.sandbox import SandboxedEnvironment

from sparkspec.config.jinja_env import LOOP_WORDS, NoValue, inside, symlink_loop
from sparkspec.fsutil import read_regular


def environment(root: Path) -> BoundedEnvironment:
    env = BoundedEnvironment(loader=ProjectLoader(root), undefined=jinja2.StrictUndefined, autoescape=False,
                             finalize=_printable)
    # A prompt is part of its render's key: one that differs from run to run makes every plan
    # render it again, and every apply pay again. Jinja's two sources of chance are refused.
    env.filters["random"] = _refused("the `random` filter",
                                     "pick the value with a variable (--var) or a matrix instead")
    env.globals["lipsum"] = _refused("`lipsum()`", "write the placeholder text into the template")
    env.globals["range"] = env.bounded_range
    for name in SIZED_FILTERS:
        env.filters[name] = _sized(name, env.filters[name])
    return env


def _printable(value: Any) -> Any:
    """What `{{ ... }}` prints: never None, the value of a variable left empty."""
    if value is None:
        raise NoValue()
    return value


# Filters whose arguments say how long a string they make: checked before it is made.
SIZED_FILTERS = ("center", "indent", "wordwrap", "format", "replace", "join")


def _sized(name: str, apply: Callable[..., Any]) -> Callable[..., Any]:
    skip = 1 if getattr(apply, "jinja_pass_arg", None) is not None else 0  # its context or environment first

    def bounded(*args: Any, **kwargs: Any) -> Any:
        given = args[skip:]
        check_size(name, given[0] if given else None, given[1:], kwargs)
        return apply(*args, **kwargs)
    bounded.__dict__.update(getattr(apply, "__dict__", {}))  # jinja's pass_context / pass_eval_context marks
    return bounded


def check_size(name: str, subject: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    """Refuse a string operation that would make more than MAX_STRING characters, before it
    allocates them: a width (`center(200000000)`, `'%200000000s'`), a replacement or a
    separator multiplied by the pieces it goes between."""
    values = [*args, *kwargs.values()]
    if any(isinstance(v, int) and not isinstance(v, bool) and abs(v) > MAX_STRING for v in values):
        raise jinja2.exceptions.SecurityError(f"`{name}` with a size over {MAX_STRING:,} characters")
    if name in ("format", "%", "format_map") and isinstance(subject, str) and _WIDE.search(subject):
        raise jinja2.exceptions.SecurityError(f"a format width over {MAX_STRING:,} characters")
    if name == "replace" and isinstance(subject, str) and len(args) >= 2 and all(isinstance(a, str) for a in args[:2]):
        old, new = args[0], args[1]
        grows = (subject.count(old) if old else len(subject) + 1) * max(0, len(new) - len(old))
        if len(subject) + grows > MAX_STRING:
            raise jinja2.exceptions.SecurityError(f"`replace` would make more than {MAX_STRING:,} characters")
    if name == "join" and isinstance(subject, (list, tuple, range)):
        separator = args[0] if args and isinstance(args[0], str) else str(kwargs.get("d", ""))
        if len(separator) * len(subject) > MAX_STRING:
            raise jinja2.exceptions.SecurityError(f"`join` would make more than {MAX_STRING:,} characters")


_WIDE = re.compile(r"%[-#0 +]*(?:\d{7,}|\d*\.\d{7,})|\{[^{}]*:[^{}]*?\d{7,}")


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
            where = "an absolute path; give it relative to the spec's folder" if template.startswith("/") \
                else "a NUL character is in its name" if "\0" in template \
                else LOOP_WORDS if symlink_loop(self.root, template) else "outside the project folder"
            shown = template.replace("\0", "\\0")
            raise jinja2.TemplateNotFound(f"{shown} ({where})")
        try:
            source = read_regular(path).decode("utf-8-sig")  # a BOM (Notepad) is no part of the prompt
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
MAX_STRING = 1_000_000  # characters a `~`, a `+`, a width or a replacement may make


class BoundedCodeGenerator(CodeGenerator):
    """Compiles `a ~ b` to the environment's bounded join: a string doubled in a loop
    (`{% set ns.s = ns.s ~ ns.s %}`) stops at MAX_STRING characters, not at gigabytes."""

    def visit_Concat(self, node: nodes.Concat, frame: Frame) -> None:
        self.write("environment.bounded_join((")
        for arg in node.nodes:
            self.visit(arg, frame)
            self.write(", ")
        self.write("))")


class BoundedEnvironment(SandboxedEnvironment):
    """The sandbox refuses unsafe attributes; this also bounds what `*` and `**` can build,
    so `{{ 'ab' * 400000000 }}` is an error, not gigabytes and minutes (Jinja's sandbox
    already bounds `range`)."""

    intercepted_binops = frozenset({"*", "**", "+", "%"})
    code_generator_class = BoundedCodeGenerator
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
        if operator == "+" and isinstance(left, (str, list, tuple)) and isinstance(right, (str, list, tuple)) \
                and len(left) + len(right) > MAX_STRING:
            raise jinja2.exceptions.SecurityError(f"`+` makes more than {MAX_STRING:,} items")
        if operator == "%" and isinstance(left, str):
            check_size("%", left, right if isinstance(right, tuple) else (right,), {})
        return super().call_binop(context, operator, left, right)

    def bounded_join(self, parts: tuple[Any, ...]) -> str:
        """What `~` makes: the parts as text, at most MAX_STRING characters."""
        text = [str(part) for part in parts]
        if sum(len(t) for t in text) > MAX_STRING:
            raise jinja2.exceptions.SecurityError(f"`~` makes more than {MAX_STRING:,} characters")
        return "".join(text)

    def call(__self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:  # noqa: N805 - Jinja's own signature
        """A string's own methods (`'a'.center(200000000)`, `.format`, `.replace`, `.ljust`)
        are held to MAX_STRING as the filters are."""
        method = getattr(__obj, "__wrapped__", __obj)  # the sandbox hands out str.format wrapped
        owner = getattr(method, "__self__", None)
        if isinstance(owner, str):
            check_size(getattr(method, "__name__", "method"), owner, args, kwargs)
        return super().call(__context, __obj, *args, **kwargs)
