"""From project.spark.yaml to a resolved `Project`, or every problem at once."""

from __future__ import annotations

import difflib
import hashlib
import itertools
import json
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sparkspec import apifacts, graph
from sparkspec.diagnostics import Diagnostic, Severity, has_errors
from sparkspec.errors import SparkspecError, SpecError
from sparkspec.spec import images, schema
from sparkspec.spec.model import ImageRef, PollConfig, Project, ProviderConfig, Scene, SequenceSpec
from sparkspec.spec.templates import Templates, TemplateProblem, inside
from sparkspec.spec.yamlsource import Document, Path as KeyPath, dotted, load_yaml

_SLUG_RUNS = re.compile(r"[^a-z0-9]+")
_ID = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")  # used with fullmatch: no trailing newline
_GENERATION = ("resolution", "ratio", "seed", "camera_fixed", "watermark")
_REQUEST = ("service_tier", "execution_expires_after", "callback_url")
_INTEGER_FIELDS = ("duration", "frames", "seed", "execution_expires_after", "parallelism")


@dataclass(frozen=True)
class LoadOptions:
    variables: tuple[str, ...] = ()  # --var K=V, in order
    var_files: tuple[str, ...] = ()  # --var-file F, in order
    provider: str | None = None  # --provider TYPE


@dataclass(frozen=True)
class Loaded:
    project: Project
    warnings: tuple[Diagnostic, ...]


def slugify(value: Any) -> str:
    return _SLUG_RUNS.sub("-", str(value).lower()).strip("-")


def load_project(spec_path: Path, options: LoadOptions = LoadOptions(),
                 display: str | None = None) -> Loaded:
    """Load, validate and resolve a spec. Raises SpecError with every diagnostic."""
    display = display or str(spec_path)
    try:
        raw = spec_path.read_bytes()
    except FileNotFoundError:
        raise SparkspecError(
            f"{display}: no such file; run `sparkspec init` to start a project, or pass -f FILE"
        ) from None
    except OSError as exc:
        raise SparkspecError(f"{display}: cannot read: {exc.strerror}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        before = raw[: exc.start].decode("utf-8")  # valid up to the bad byte
        line, col = before.count("\n") + 1, len(before) - before.rfind("\n")
        raise SpecError([Diagnostic(display, line, col, "error", "",
                                    f"not UTF-8 text (byte {exc.start}); save the spec as UTF-8")]) from None
    doc = load_yaml(text, display)
    return _Resolver(spec_path, doc, hashlib.sha256(raw).hexdigest(), options).run()


class _Resolver:
    def __init__(self, spec_path: Path, doc: Document, digest: str, options: LoadOptions) -> None:
        self.spec_path = spec_path.resolve()
        self.root = self.spec_path.parent
        self.doc = doc
        self.digest = digest
        self.options = options
        self.diagnostics: list[Diagnostic] = list(doc.diagnostics)
        self.templates = Templates(self.root)
        self.images: dict[str, ImageRef | str] = {}  # rendered text -> ref or problem

    # -- diagnostics ------------------------------------------------------------------
    def report(self, path: KeyPath, message: str, *, at_key: bool = False,
               severity: Severity = "error") -> None:
        line, col = self.doc.position(path, at_key=at_key)
        self.diagnostics.append(Diagnostic(self.doc.file, line, col, severity, dotted(path), message))

    def report_at(self, file: str, line: int, col: int, path: KeyPath, message: str) -> None:
        self.diagnostics.append(Diagnostic(file, line, col, "error", dotted(path), message))

    # -- the whole spec -------------------------------------------------------------------
    def run(self) -> Loaded:
        data = self.doc.data
        if self.doc.root is not None and not isinstance(data, dict) and not self.diagnostics:
            self.report((), "the spec must be a mapping with at least `version: 1` and `scenes`")
        if self.doc.root is None and not self.diagnostics:
            self.report((), "the spec is empty; it needs at least `version: 1` and `scenes`")
        if not isinstance(data, dict):
            raise SpecError(sorted(set(self.diagnostics)))
        self.diagnostics.extend(schema.validate(self.doc))
        _whole_numbers(data)
        variables = self.variables(data)
        provider = self.provider(data)
        defaults = _mapping(data.get("defaults"))
        scenes, variants = self.scenes(data, defaults, variables)
        self.check_references(data, scenes, variants)
        sequences = self.sequences(data, scenes, variants)
        output_dir = _typed(data, "output_dir", str, "renders")
        if inside(self.root, output_dir) is None:
            self.report(("output_dir",), f"{output_dir!r} must be a folder inside the project")
        diagnostics = _unique(self.diagnostics)
        if has_errors(diagnostics):
            raise SpecError(diagnostics)
        project = Project(
            spec_path=self.spec_path, display_path=self.doc.file, root=self.root,
            name=_typed(data, "name", str, self.root.name), salt=_typed(data, "salt", str, ""),
            output_dir=output_dir, provider=provider, scenes=scenes, sequences=sequences,
            spec_sha256=self.digest,
            vars_sha256=hashlib.sha256(_canonical(variables).encode()).hexdigest(),
            templates_sha256=self.templates.digest())
        return Loaded(project, tuple(diagnostics))

    def variables(self, data: dict[str, Any]) -> dict[str, Any]:
        merged = dict(_mapping(data.get("vars")))
        for name in self.options.var_files:
            path = Path(name)
            try:
                text = path.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                reason = "no such file" if isinstance(exc, FileNotFoundError) else "cannot read it"
                self.diagnostics.append(Diagnostic(name, 1, 1, "error", "", f"--var-file: {reason}"))
                continue
            var_doc = load_yaml(text, name)
            self.diagnostics.extend(var_doc.diagnostics)
            if var_doc.data is None and not var_doc.diagnostics:
                continue
            if not isinstance(var_doc.data, dict):
                if not var_doc.diagnostics:
                    self.diagnostics.append(Diagnostic(name, 1, 1, "error", "",
                                                       "a var file must be a mapping of name: value"))
                continue
            merged.update(var_doc.data)
        for item in self.options.variables:
            key, sep, value = item.partition("=")
            if not sep or not key.strip():
                self.diagnostics.append(Diagnostic("--var", 1, 1, "error", "",
                                                   f"{item!r}: expected KEY=VALUE"))
                continue
            merged[key.strip()] = value
        return merged

    def provider(self, data: dict[str, Any]) -> ProviderConfig:
        raw = _mapping(data.get("provider"))
        poll = _mapping(raw.get("poll"))
        initial = _typed(poll, "initial", (int, float), 2.0)
        ceiling = _typed(poll, "max", (int, float), max(15.0, float(initial)))
        if ceiling < initial:
            self.report(("provider", "poll", "max"),
                        f"{ceiling} is below poll.initial ({initial}); raise max or lower initial")
        price = raw.get("price_per_million_tokens")
        return ProviderConfig(
            type=self.options.provider or _typed(raw, "type", str, "spark"),
            model=_typed(raw, "model", str, apifacts.MODEL),
            base_url=_typed(raw, "base_url", str, None),
            api_key_env=_typed(raw, "api_key_env", str, "SPARK_API_KEY"),
            parallelism=_typed(raw, "parallelism", int, 4),
            poll=PollConfig(float(initial or 0), float(ceiling or 0)),
            price_per_million_tokens=float(price) if isinstance(price, (int, float)) and _is_number(price) else None)

    # -- scenes --------------------------------------------------------------------------
    def scenes(self, data: dict[str, Any], defaults: dict[str, Any], variables: dict[str, Any]
               ) -> tuple[dict[str, Scene], dict[str, list[str]]]:
        scenes: dict[str, Scene] = {}
        variants: dict[str, list[str]] = {}  # matrix scene id -> its expanded ids
        origin: dict[str, str] = {}
        default_length = self.length(defaults, ("defaults",))
        for sid, raw in _mapping(data.get("scenes")).items():
            if not isinstance(raw, dict) or not _ID.fullmatch(sid):
                continue
            path: KeyPath = ("scenes", sid)
            for eid, combo in self.expand(sid, raw):
                if eid in origin:
                    self.report(path, f"id {eid!r} is produced twice (also by scene {origin[eid]!r}); "
                                "rename a scene or change a matrix value", at_key=True)
                    continue
                origin[eid] = sid
                if combo is not None:
                    variants.setdefault(sid, []).append(eid)
                scene = self.scene(eid, sid, raw, combo, defaults, default_length, variables)
                if scene is not None:
                    scenes[eid] = scene
        return scenes, variants

    def expand(self, sid: str, raw: dict[str, Any]) -> list[tuple[str, dict[str, Any] | None]]:
        matrix = raw.get("matrix")
        if matrix is None:
            return [(sid, None)]
        if not isinstance(matrix, dict) or not matrix or not all(
                isinstance(v, list) and v and all(_is_scalar(x) for x in v) for v in matrix.values()):
            return []  # the schema reported it
        names = list(matrix)
        out: list[tuple[str, dict[str, Any] | None]] = []
        for values in itertools.product(*(matrix[n] for n in names)):
            eid = "-".join([sid] + [slugify(v) for v in values])
            if not _ID.fullmatch(eid):
                self.report(("scenes", sid), f"matrix expansion {eid!r} is not a valid id "
                            "(at most 64 characters of a-z, 0-9, - and _); shorten the id or the values",
                            at_key=True)
                continue
            out.append((eid, dict(zip(names, values))))
        return out

    def length(self, level: Mapping[str, Any], path: KeyPath) -> tuple[str, int] | None:
        """The duration or frames set at one level, if any; both at once is an error."""
        duration, frames = level.get("duration"), level.get("frames")
        if duration is not None and frames is not None:
            self.report(path, "set duration or frames, not both", at_key=True)
        if isinstance(frames, int) and _is_int(frames):
            if not apifacts.valid_frames(frames) and 29 <= frames <= 289:
                self.report(path + ("frames",), f"{frames} is not 25+4n in [29, 289]; "
                            f"use {frames - (frames - 25) % 4} or {frames - (frames - 25) % 4 + 4}")
            return ("frames", frames)
        if isinstance(duration, int) and _is_int(duration):
            return ("duration", duration)
        return None

    def scene(self, eid: str, sid: str, raw: dict[str, Any], combo: dict[str, Any] | None,
              defaults: dict[str, Any], default_length: tuple[str, int] | None,
              variables: dict[str, Any]) -> Scene | None:
        path: KeyPath = ("scenes", sid)
        context = variables
        scene_vars = raw.get("vars")
        if isinstance(scene_vars, dict) or combo:
            context = {**variables, **(scene_vars if isinstance(scene_vars, dict) else {}), **(combo or {})}
        prompt = self.prompt(raw, path, context)
        first = _mapping(raw.get("first_frame"))
        upstream = first.get("scene") if isinstance(first.get("scene"), str) else None
        image = self.image(first.get("image"), path + ("first_frame", "image"), context)

        def pick(key: str, kind: type | tuple[type, ...], fallback: Any) -> Any:
            for level in (raw, defaults):
                value = level.get(key)
                if isinstance(value, kind) and not (kind is int and isinstance(value, bool)):
                    return value
            return fallback

        has_first_frame = upstream is not None or "image" in first
        ratio = pick("ratio", str, "adaptive" if has_first_frame else "16:9")
        if ratio == "adaptive" and not has_first_frame:
            self.report(path, "ratio: adaptive needs a first_frame to take the ratio from", at_key=True)
        length: tuple[str, int] = (self.length(raw, path) or default_length
                                   or ("duration", apifacts.DEFAULT_DURATION))
        seed = pick("seed", int, None)
        if seed == -1:
            where = path + ("seed",) if raw.get("seed") == -1 else ("defaults", "seed")
            self.report(where, "seed -1 asks the API for a random seed: this render is not reproducible",
                        severity="warning")
        if prompt is not None and len(prompt) > apifacts.PROMPT_ADVISED_CHARS:
            where = path + (("prompt",) if "prompt" in raw else ("prompt_file",))
            self.report(where, f"the rendered prompt is {len(prompt)} characters; the API advises at most "
                        f"{apifacts.PROMPT_ADVISED_CHARS}", severity="warning")
        if prompt is None or (image is None and "image" in first):
            return None
        return Scene(
            id=eid, source_id=sid, prompt=prompt,
            resolution=pick("resolution", str, apifacts.API_DEFAULTS["resolution"]), ratio=ratio,
            duration=length[1] if length[0] == "duration" else None,
            frames=length[1] if length[0] == "frames" else None,
            seed=seed, camera_fixed=pick("camera_fixed", bool, False),
            watermark=pick("watermark", bool, False), image=image, upstream=upstream,
            service_tier=pick("service_tier", str, None),
            execution_expires_after=pick("execution_expires_after", int, None),
            callback_url=pick("callback_url", str, None),
            description=raw.get("description") if isinstance(raw.get("description"), str) else None)

    def prompt(self, raw: dict[str, Any], path: KeyPath, context: Mapping[str, Any]) -> str | None:
        inline, file = raw.get("prompt"), raw.get("prompt_file")
        if "prompt" in raw and "prompt_file" in raw:
            self.report(path, "give prompt or prompt_file, not both", at_key=True)
            return None
        if "prompt" not in raw and "prompt_file" not in raw:
            self.report(path, "missing required key 'prompt' (or 'prompt_file')")
            return None
        try:
            if isinstance(inline, str):
                return self.templates.render_inline(inline, context)
            if isinstance(file, str):
                if inside(self.root, file) is None:
                    self.report(path + ("prompt_file",), f"{file!r} must be a file inside the project folder")
                    return None
                return self.templates.render_file(file, context)
        except TemplateProblem as problem:
            self.template_problem(problem, path + ("prompt" if isinstance(inline, str) else "prompt_file",))
        return None

    def template_problem(self, problem: TemplateProblem, path: KeyPath) -> None:
        if problem.file is not None:
            self.report_at(self.display(problem.file), problem.line or 1, 1, path, problem.message)
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
        known = self.images.get(text)
        if known is None:
            known = self.images[text] = self.check_image(text)
        if isinstance(known, str):
            self.report(path, known)
            return None
        return known

    def check_image(self, text: str) -> ImageRef | str:
        if text.startswith("https://"):
            return ImageRef(text, url=text)
        if text.startswith("http://"):
            return f"{text!r}: the API takes https URLs only; use https:// or a file in the project"
        try:
            if text.startswith("data:"):
                info = images.inspect_data_url(text)
                return ImageRef(text, url=text, width=info.width, height=info.height)
            path = inside(self.root, text)
            if path is None:
                return f"{text!r} must be a file inside the project folder"
            info = images.inspect_file(path)
            return ImageRef(text, path=path, width=info.width, height=info.height)
        except images.ImageProblem as problem:
            return f"{text if not text.startswith('data:') else 'data URL'}: {problem}"

    # -- the graph -------------------------------------------------------------------------
    def check_references(self, data: dict[str, Any], scenes: dict[str, Scene],
                         variants: dict[str, list[str]]) -> None:
        upstreams: dict[str, str | None] = {}
        declared = _declared_ids(data, variants)
        for eid, scene in scenes.items():
            up = scene.upstream
            if up is None or up in scenes:
                upstreams[eid] = up
                continue
            where = ("scenes", scene.source_id, "first_frame", "scene")
            if up in variants:
                self.report(where, f"{up!r} is a matrix scene; name one of its expansions: "
                            f"{', '.join(variants[up])}")
            elif up in declared:
                continue  # that scene has errors of its own
            else:
                self.report(where, f"no scene {up!r}{_did_you_mean(up, declared)}")
            upstreams[eid] = None
        for cycle in graph.find_cycles(upstreams):
            scene = scenes[cycle[0]]
            self.report(("scenes", scene.source_id),
                        f"first_frame cycle: {' -> '.join(cycle + [cycle[0]])}; a scene cannot start "
                        "from its own last frame", at_key=True)

    def sequences(self, data: dict[str, Any], scenes: dict[str, Scene],
                  variants: dict[str, list[str]]) -> dict[str, SequenceSpec]:
        out: dict[str, SequenceSpec] = {}
        declared = _declared_ids(data, variants)
        for name, raw in _mapping(data.get("sequences")).items():
            members = _mapping(raw).get("scenes")
            if not isinstance(members, list) or not _ID.fullmatch(name):
                continue
            ok = True
            for i, member in enumerate(members):
                if not isinstance(member, str) or member in scenes:
                    continue
                ok = False
                where = ("sequences", name, "scenes", i)
                if member in variants:
                    self.report(where, f"{member!r} is a matrix scene; list its expansions: "
                                f"{', '.join(variants[member])}")
                elif member not in declared:
                    self.report(where, f"no scene {member!r}{_did_you_mean(member, declared)}")
            if ok and all(isinstance(m, str) for m in members):
                out[name] = SequenceSpec(name, tuple(members))
        return out


def _declared_ids(data: dict[str, Any], variants: dict[str, list[str]]) -> dict[str, None]:
    """Every scene id the spec declares, resolved or not: plain ids and matrix expansions."""
    plain = (sid for sid in _mapping(data.get("scenes")) if sid not in variants)
    return dict.fromkeys([*plain, *(eid for ids in variants.values() for eid in ids)])


def _whole_numbers(data: dict[str, Any]) -> None:
    """JSON Schema counts 4.0 as an integer, so editors accept it: take it as 4, not ignore it."""
    levels = [_mapping(data.get("defaults")), _mapping(data.get("provider"))]
    levels += [scene for scene in _mapping(data.get("scenes")).values() if isinstance(scene, dict)]
    for level in levels:
        for name in _INTEGER_FIELDS:
            value = level.get(name)
            if isinstance(value, float) and value.is_integer():
                level[name] = int(value)


def _did_you_mean(name: str, options: Mapping[str, Any]) -> str:
    hint = difflib.get_close_matches(name, list(options), n=1, cutoff=0.6)
    return f"; did you mean {hint[0]!r}?" if hint else ""


def _mapping(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _typed(mapping: Mapping[str, Any], key: str, kind: type | tuple[type, ...], default: Any) -> Any:
    value = mapping.get(key)
    if isinstance(value, kind) and not (isinstance(value, bool) and kind is not bool):
        return value
    return default


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_scalar(value: Any) -> bool:
    return isinstance(value, (str, int, float, bool))


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def _unique(diagnostics: Sequence[Diagnostic]) -> list[Diagnostic]:
    return list(dict.fromkeys(diagnostics))
