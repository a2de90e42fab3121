"""Prompt templates: sandboxed Jinja2, undefined variables are errors.

Most prompts are text with a few `{{ name }}` substitutions. Compiling each of
those to Python costs far more than rendering it, so a template whose parsed
form is only text and plain names is rendered straight from Jinja's own AST,
with Jinja's semantics (str() of the value, a missing name is an error). Any
other template goes through Jinja's compiler. Jinja itself (its import is a
tenth of a plan's start-up) is imported only when a template needs it: plain
text and `{{ name }}` prompts never do.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import keyword
import re
import signal
import threading
import traceback
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from jinja2 import nodes

    from sparkspec.config.jinja_sandbox import BoundedEnvironment

_INLINE_NAME = "<prompt>"
_DELIMITERS = ("{{", "{%", "{#")
_NEWLINES = re.compile(r"\r\n|\r|\n")
_OPENING = re.compile(r"\{[{%#]")  # where Jinja's lexer leaves text: the earliest tag opening
_NAME_TAG = re.compile(r"\{\{[ \t\n]*([A-Za-z_][A-Za-z0-9_]*)[ \t\n]*\}\}")
# Names Jinja's parser reads as constants or operators, not as variables.
_NOT_PLAIN_NAMES = frozenset(keyword.kwlist) | {"true", "false", "none", "and", "or", "not", "in", "is",
                                                "if", "else"}
# The environment's globals (Jinja's defaults; the sandbox adds none): a `{{ name }}` of one
# of these is not a plain name. Known here so that such prompts need no Jinja import.
JINJA_GLOBALS = frozenset({"range", "dict", "lipsum", "cycler", "joiner", "namespace"})

Renderer = Callable[[Mapping[str, Any]], str]


class NoValue(Exception):
    """A template printed a value that is none (a variable left empty: `name:` in YAML is null):
    the prompt would carry the word "None" to the API, and be paid for."""


def no_value(name: str | None = None) -> str:
    what = f"'{name}'" if name else "a variable"
    return (f"{what} has no value here (null: `name:` with nothing after it, or ~); give it one, "
            "or '' for an empty text")


class TemplateProblem(Exception):
    """A template failed to load, parse or render. `file` is None for an inline prompt."""

    def __init__(self, message: str, file: str | None, line: int | None) -> None:
        super().__init__(message)
        self.message = message
        self.file = file
        self.line = line


def symlink_loop(root: Path, relative: str) -> bool:
    """`relative` under `root` is (or passes through) a symlink that leads back to itself."""
    if not relative or "\0" in relative:
        return False
    try:
        (root / relative).resolve()
    except RuntimeError:  # Python 3.11's word for it (3.13: OSError ELOOP)
        return True
    except OSError as exc:
        return exc.errno == errno.ELOOP
    return False


LOOP_WORDS = "it is a symlink loop: a link that leads back to itself"
LOOP = f" ({LOOP_WORDS})"


def inside(root: Path, relative: str) -> Path | None:
    """`relative` resolved under `root`, or None when it leaves it (symlinks included), or
    names no file at all (a NUL character, from a variable: the spec's own are reported)."""
    if not relative or "\0" in relative or Path(relative).is_absolute():
        return None
    try:
        candidate = (root / relative).resolve()
    except (RuntimeError, OSError):  # a symlink loop (Python 3.11 raises RuntimeError): no file
        return None
    if candidate != root and root not in candidate.parents:
        return None
    return candidate


class Templates:
    """Renders the project's prompts and image templates."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        self._env: BoundedEnvironment | None = None
        self._inline: dict[str, Renderer] = {}

    @property
    def env(self) -> BoundedEnvironment:
        """The sandboxed environment, made (and Jinja imported) on first use."""
        if self._env is None:
            from sparkspec.config.jinja_sandbox import environment

            self._env = environment(self.root)
        return self._env

    def _read(self) -> dict[str, str]:
        """Template file name -> sha256 of its source, for every file loaded so far."""
        return self._env.loader.read if self._env is not None else {}

    def digest(self) -> str:
        """The sha256 of every template file read so far, so a saved plan notices their edits."""
        return hashlib.sha256(json.dumps(self._read(), sort_keys=True).encode()).hexdigest()

    def variables_used(self) -> set[str]:
        """Every variable name the templates rendered so far refer to (files and includes too)."""
        from jinja2 import meta

        sources = [source for source in self._inline if any(d in source for d in _DELIMITERS)]
        if not sources and not self._read():
            return set()
        import jinja2

        for name in self._read():
            try:
                sources.append(self.env.loader.get_source(self.env, name)[0])
            except jinja2.TemplateNotFound:
                continue
        used: set[str] = set()
        for source in sources:
            try:
                used |= meta.find_undeclared_variables(self.env.parse(source))
            except jinja2.TemplateSyntaxError:
                continue  # reported where it was rendered
        return used

    def names_read(self, source: str | None = None, file: str | None = None) -> set[str] | None:
        """The variable names one template reads (an inline `source`, or the template `file`),
        with the files it includes or imports; None when that cannot be told (an include
        named by a variable, a file that does not parse: reported where it is rendered)."""
        import jinja2
        from jinja2 import meta

        names: set[str] = set()
        pending: list[tuple[str | None, str | None]] = [(source, file)]
        seen: set[str] = set()
        while pending:
            text, name = pending.pop()
            if name is not None:
                if name in seen:
                    continue
                seen.add(name)
                try:
                    text = self.env.loader.get_source(self.env, name)[0]
                except jinja2.TemplateNotFound:
                    continue  # reported where it is rendered
            if text is None or not any(d in text for d in _DELIMITERS):
                continue
            try:
                tree = self.env.parse(text)
                names |= meta.find_undeclared_variables(tree)  # compiles: an unknown filter fails here
            except jinja2.TemplateError:
                return None
            for ref in meta.find_referenced_templates(tree):
                if ref is None:
                    return None
                pending.append((None, ref))
        return names

    def render_inline(self, source: str, context: Mapping[str, Any]) -> str:
        renderer = self._inline.get(source)
        if renderer is None:
            renderer = self._inline[source] = self._compile_inline(source)
        return self._run(renderer, context, _INLINE_NAME, None)

    def render_file(self, relative: str, context: Mapping[str, Any]) -> str:
        import jinja2

        try:
            template = self.env.get_template(relative)
        except jinja2.TemplateSyntaxError as exc:
            raise TemplateProblem(f"template syntax: {exc.message}", exc.filename, exc.lineno) from None
        except jinja2.TemplateNotFound as exc:
            raise TemplateProblem(_not_loaded(exc.message), None, None) from None
        return self._run(template.render, context, template.filename or relative, template.filename)

    def _compile_inline(self, source: str) -> Renderer:
        if not any(d in source for d in _DELIMITERS):
            text = _as_jinja_reads_it(source)
            return lambda context: text
        scanned = _names_only(_as_jinja_reads_it(source))
        if scanned is not None and not any(is_name and text in JINJA_GLOBALS for is_name, text, _ in scanned):
            return _render_parts(scanned)
        import jinja2

        try:
            tree = self.env.parse(source, _INLINE_NAME)
        except jinja2.TemplateSyntaxError as exc:
            raise TemplateProblem(f"template syntax: {exc.message}", None, exc.lineno) from None
        simple = self._simple_parts(tree)
        if simple is not None:
            return simple
        try:
            code = self.env.compile(tree, _INLINE_NAME, _INLINE_NAME)
        except jinja2.TemplateSyntaxError as exc:  # an unknown filter or test shows up here
            raise TemplateProblem(f"template syntax: {exc.message}", None, exc.lineno) from None
        template = self.env.template_class.from_code(self.env, code, self.env.make_globals(None))
        return template.render

    def _simple_parts(self, tree: nodes.Template) -> Renderer | None:
        """A direct renderer for text-and-names templates, else None."""
        from jinja2 import nodes

        if len(tree.body) != 1 or not isinstance(tree.body[0], nodes.Output):
            return None
        parts: list[tuple[bool, str, int]] = []
        for node in tree.body[0].nodes:
            if isinstance(node, nodes.TemplateData):
                parts.append((False, node.data, node.lineno))
            elif isinstance(node, nodes.Name) and node.ctx == "load":
                if node.name in JINJA_GLOBALS:
                    return None
                parts.append((True, node.name, node.lineno))
            else:
                return None
        return _render_parts(parts)

    def _run(self, render: Renderer, context: Mapping[str, Any], name: str, file: str | None) -> str:
        if self._env is not None:
            self._env.start_render()
        try:
            if getattr(render, "__self__", None) is None:  # text and names: no loop to bound
                return render(context)
            with _deadline(RENDER_SECONDS):
                return render(context)
        except TemplateProblem:
            raise
        except Exception as exc:  # noqa: BLE001 - any error inside user template code
            raise _problem(exc, name, file) from None


RENDER_SECONDS = 10.0  # one template's render: loops over long strings are not bounded by range's steps


class RenderTimeout(Exception):
    pass


@contextlib.contextmanager
def _deadline(seconds: float) -> Iterator[None]:
    """Interrupt a render that runs past `seconds` (a loop in a loop over long values) with
    RenderTimeout: a spec must not hang `validate` or a CI's `plan`. Only on the main thread,
    with no other timer running (signals are the main thread's); elsewhere no bound."""
    if threading.current_thread() is not threading.main_thread() or signal.getitimer(signal.ITIMER_REAL)[0]:
        yield
        return

    def expired(signum: int, frame: object) -> None:
        raise RenderTimeout(f"the template took more than {seconds:g} s to render (a loop in a loop?)")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _problem(exc: Exception, name: str, file: str | None) -> TemplateProblem:
    """What went wrong in a template, as a TemplateProblem at its file and line."""
    import jinja2

    if isinstance(exc, jinja2.TemplateSyntaxError):
        return TemplateProblem(f"template syntax: {exc.message}", exc.filename, exc.lineno)
    if isinstance(exc, jinja2.TemplateNotFound):
        return TemplateProblem(_not_loaded(exc.message), file, _template_line(exc, name))
    if isinstance(exc, jinja2.UndefinedError):
        where = _template_frame(exc)
        return TemplateProblem(f"undefined variable: {exc.message}", where[0] if where else file,
                               where[1] if where else None)
    if isinstance(exc, jinja2.exceptions.SecurityError):
        return TemplateProblem(f"not allowed in a template: {exc}", file, _template_line(exc, name))
    if isinstance(exc, RenderTimeout):
        return TemplateProblem(f"not allowed in a template: {exc}", file, _template_line(exc, name))
    if isinstance(exc, NoValue):
        where = _template_frame(exc)
        return TemplateProblem(no_value(), where[0] if where else file, where[1] if where else None)
    return TemplateProblem(f"template failed: {type(exc).__name__}: {exc}", file, _template_line(exc, name))


Parts = list[tuple[bool, str, int]]  # (is a name, the text or the name, its line)


def _render_parts(parts: Parts) -> Renderer:
    def render(context: Mapping[str, Any]) -> str:
        out = []
        for is_name, text, line in parts:
            if not is_name:
                out.append(text)
            elif text in context:
                if context[text] is None:
                    raise TemplateProblem(no_value(text), None, line)
                out.append(str(context[text]))
            else:
                raise TemplateProblem(_undefined(parts, context), None, line)
        return "".join(out)

    return render


def _undefined(parts: Parts, context: Mapping[str, Any]) -> str:
    """Every name the template uses that `context` lacks, in one message: all of them at once,
    not one per run."""
    missing = list(dict.fromkeys(text for is_name, text, _ in parts if is_name and text not in context))
    if len(missing) == 1:
        return f"undefined variable: '{missing[0]}' is undefined"
    names = ", ".join(f"'{name}'" for name in missing[:-1]) + f" and '{missing[-1]}'"
    return f"undefined variables: {names} are undefined"


def _names_only(text: str) -> Parts | None:
    """Jinja's parse of `text` (newlines as Jinja reads them) when it is only text and
    `{{ name }}`s, found without Jinja's lexer and parser; None for anything else."""
    parts: Parts = []
    pos = 0
    while True:
        opening = _OPENING.search(text, pos)
        if opening is None:
            if pos < len(text):
                parts.append((False, text[pos:], 0))
            return parts
        tag = _NAME_TAG.match(text, opening.start())
        if tag is None or tag.group(1) in _NOT_PLAIN_NAMES:
            return None
        if opening.start() > pos:
            parts.append((False, text[pos:opening.start()], 0))
        parts.append((True, tag.group(1), text.count("\n", 0, tag.start(1)) + 1))
        pos = tag.end()


def _as_jinja_reads_it(source: str) -> str:
    """What Jinja renders for text with no delimiters: newlines unified, one trailing newline dropped."""
    lines = _NEWLINES.split(source)
    if lines[-1] == "":
        lines.pop()
    return "\n".join(lines)


def _template_frame(exc: BaseException) -> tuple[str | None, int] | None:
    """The innermost template frame: Jinja rewrites tracebacks to template lines."""
    found: tuple[str | None, int] | None = None
    for frame in traceback.extract_tb(exc.__traceback__):
        if frame.filename == _INLINE_NAME:
            found = (None, frame.lineno or 1)
        elif not frame.filename.endswith(".py") and not frame.filename.startswith("<") and frame.lineno is not None:
            found = (frame.filename, frame.lineno)
    return found


def _not_loaded(message: str | None) -> str:
    """Why a template file could not be loaded: not found, or found and unusable (not UTF-8
    text, outside the project), which "not found" would misname."""
    name, _, reason = (message or "").partition(" (")
    reason = reason.rstrip(")")
    if not reason or reason == "no such file":
        return f"template file not found: {message}"
    return f"template file {name}: {reason}"


def _template_line(exc: BaseException, name: str) -> int | None:
    where = _template_frame(exc)
    return where[1] if where else None
