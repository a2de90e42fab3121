"""Templating a scene: the variables its templates see, and its templated fields rendered.

Variables, weakest first: the spec's `vars`, each `--var-file` in order, each `--var K=V` in
order, then the scene's own `vars`, then its matrix values. The templated fields are `prompt`,
`prompt_file`'s content and `first_frame.image`; a problem in one points at the template's own
file and line when it comes from a template file, else into the spec where the field is written.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from sparkspec.diagnostics import Diagnostic
from sparkspec.fsutil import read_regular
from sparkspec.config import images
from sparkspec.config.model import ImageRef
from sparkspec.config.jinja_env import LOOP, Templates, TemplateProblem, inside, symlink_loop
from sparkspec.config.values import as_mapping
from sparkspec.config.yamlsource import Document, Path as KeyPath, dotted, load_yaml


def merge_variables(spec_vars: Any, var_files: Sequence[str], assignments: Sequence[str],
                    given: list[Diagnostic] | None = None) -> tuple[dict[str, Any], list[Diagnostic]]:
    """The project's variables from the spec, --var-file files and --var K=V, and any problems.
    `given` receives where each variable of a var file or a --var is set (its name as the
    diagnostic's path), for the warning about variables no template reads."""
    given = [] if given is None else given
    merged = dict(as_mapping(spec_vars))
    problems: list[Diagnostic] = []
    for name in var_files:
        path = Path(name)
        try:
            text = read_regular(path).decode("utf-8-sig")
        except (OSError, UnicodeDecodeError) as exc:
            reason = "no such file" if isinstance(exc, FileNotFoundError) else "cannot read it"
            if not path.is_absolute():  # relative to the folder sparkspec runs in (-C moves it)
                reason += f" (looked for {path.absolute()})"
            problems.append(Diagnostic(name, 1, 1, "error", "", f"--var-file: {reason}"))
            continue
        var_doc = load_yaml(text, name)
        problems.extend(var_doc.diagnostics)
        if var_doc.data is None and not var_doc.diagnostics:
            continue
        if not isinstance(var_doc.data, dict):
            if not var_doc.diagnostics:
                problems.append(Diagnostic(name, 1, 1, "error", "",
                                           "a var file must be a mapping of name: value"))
            continue
        merged.update(var_doc.data)
        for var in var_doc.data:
            line, col = var_doc.position((var,), at_key=True)
            given.append(Diagnostic(name, line, col, "warning", str(var), ""))
    for item in assignments:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            problems.append(Diagnostic("--var", 1, 1, "error", "", f"{item!r}: expected KEY=VALUE"))
            continue
        merged[key.strip()] = value
        given.append(Diagnostic("--var", 1, 1, "warning", key.strip(), ""))
    return merged, problems


def _blank(text: str) -> bool:
    """No words for the API: white space and invisible format characters (a zero-width space,
    a byte-order mark, a joiner: Unicode's Cf) only."""
    import unicodedata

    return all(ch.isspace() or unicodedata.category(ch) == "Cf" for ch in text)


def scene_variables(variables: dict[str, Any], scene_vars: Any, combo: dict[str, Any] | None
                    ) -> dict[str, Any]:
    """What one scene's templates see: its own vars, then its matrix values, shadow the project's."""
    if isinstance(scene_vars, dict) or combo:
        return {**variables, **(scene_vars if isinstance(scene_vars, dict) else {}), **(combo or {})}
    return variables


class TemplatedFields:
    """Renders scenes' templated fields; every problem is appended to the shared `diagnostics`."""

    def __init__(self, doc: Document, root: Path, templates: Templates,
                 diagnostics: list[Diagnostic]) -> None:
        self.doc = doc
        self.root = root
        self.templates = templates
        self.diagnostics = diagnostics
        self.images: dict[str, ImageRef | str] = {}  # rendered text -> ref or problem

    def report(self, path: KeyPath, message: str, *, at_key: bool = False) -> None:
        self.diagnostics.append(self.doc.diagnostic(path, message, at_key=at_key))

    def prompt(self, raw: dict[str, Any], path: KeyPath, context: Mapping[str, Any],
               variant: tuple[str, Mapping[str, Any]] | None = None) -> str | None:
        """The rendered prompt. `variant`: the matrix expansion it is for (its id and values),
        named when it alone renders to nothing."""
        inline, file = raw.get("prompt"), raw.get("prompt_file")
        if "prompt" in raw and "prompt_file" in raw:
            self.report(path, "give prompt or prompt_file, not both", at_key=True)
            return None
        if "prompt" not in raw and "prompt_file" not in raw:
            self.report(path, "missing required key 'prompt' (or 'prompt_file')")
            return None
        field = path + ("prompt" if isinstance(inline, str) else "prompt_file",)
        try:
            if isinstance(inline, str):
                text = self.templates.render_inline(inline, context)
            elif isinstance(file, str):
                if inside(self.root, file) is None:
                    self.report(path + ("prompt_file",), f"{file!r} must be a file inside the project folder"
                                + (", given relative to the spec's folder" if file.startswith("/") else
                                   LOOP if symlink_loop(self.root, file) else ""))
                    return None
                text = self.templates.render_file(file, context)
            else:
                return None
        except TemplateProblem as problem:
            self.template_problem(problem, field)
            return None
        if _blank(text) and (inline or file):  # an empty string is the schema's to report
            what = "the prompt" if isinstance(inline, str) else f"the prompt file {file!r}"
            which = "" if variant is None else \
                f" for {variant[0]} ({', '.join(f'{k}={v!r}' for k, v in variant[1].items())})"
            self.report(field, f"{what} renders to nothing{which}; the API needs words to render")
            return None
        return text

    def template_problem(self, problem: TemplateProblem, path: KeyPath) -> None:
        if problem.file is not None:
            self.diagnostics.append(Diagnostic(self.display(problem.file), problem.line or 1, 1, "error",
                                               dotted(path), problem.message))
            return
        line, col = self.doc.position(path)
        node_style = self.doc_style(path)
        if problem.line and node_style in ("|", ">"):  # the block's text starts below its indicator
            line, col = line + problem.line, self.doc.position(path, at_key=True)[1] + 2
        elif problem.line and problem.line > 1:
            line += problem.line - 1
        self.diagnostics.append(Diagnostic(self.doc.file, line, col, "error", dotted(path), problem.message))

    def doc_style(self, path: KeyPath) -> str | None:
        node = self.doc.root
        import yaml

        for part in path:
            if not isinstance(node, yaml.MappingNode):
                return None
            node = next((v for k, v in node.value if getattr(k, "value", None) == part), None)
        return getattr(node, "style", None)

    def display(self, absolute: str) -> str:
        """A template file's path as the user would write it, beside the spec's."""
        try:
            relative = Path(absolute).resolve().relative_to(self.root)
        except ValueError:
            return absolute
        return os.path.normpath(str(Path(self.doc.file).parent / relative))

    def image(self, template: Any, path: KeyPath, context: Mapping[str, Any]) -> ImageRef | None:
        if not isinstance(template, str):
            return None
        try:
            text = self.templates.render_inline(template, context).strip()
        except TemplateProblem as problem:
            self.template_problem(problem, path)
            return None
        if not text:
            if template.strip():  # an empty string itself is the schema's to report
                self.report(path, "the image renders to nothing; give a file, an https URL or a data URL")
            return None
        known = self.images.get(text)
        if known is None:
            known = self.images[text] = self.check_image(text)
        if isinstance(known, str):
            self.report(path, known)
            return None
        return known

    def check_image(self, text: str) -> ImageRef | str:
        scheme, colon, rest = text.partition(":")
        if colon and scheme.lower() in ("https", "http", "data"):
            text = f"{scheme.lower()}:{rest}"  # a scheme is case-blind (RFC 3986): HTTPS:// is a URL, not a file
        if text.startswith("https://"):
            host = text[len("https://"):].split("/", 1)[0].split("?", 1)[0].split("#", 1)[0]
            if not host or any(c.isspace() for c in text) or host.startswith((":", "@")):
                return f"{text!r} is not a URL the API can fetch (no host, or a space in it)"
            return ImageRef(text, url=text)
        if text.startswith("http://"):
            return f"{text!r}: the API takes https URLs only; use https:// or a file in the project"
        try:
            if text.startswith("data:"):
                info = images.inspect_data_url(text)
                return ImageRef(text, url=text, width=info.width, height=info.height)
            path = inside(self.root, text)
            if path is None:
                return f"{text!r} must be a file inside the project folder" + (
                    ", given relative to the spec's folder" if text.startswith("/") else
                    LOOP if symlink_loop(self.root, text) else "")
            info = images.inspect_file(path)
            return ImageRef(text, path=path, width=info.width, height=info.height)
        except images.ImageProblem as problem:
            return f"{text if not text.startswith('data:') else 'data URL'}: {problem}"
