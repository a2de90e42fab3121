"""From project.spark.yaml to a resolved `Project`, or every problem at once."""

from __future__ import annotations

import hashlib
import itertools
import math
import os
import posixpath
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sparkspec import apifacts, graph
from sparkspec.diagnostics import Diagnostic, Severity, has_errors
from sparkspec.fsutil import read_regular
from sparkspec.errors import SparkspecError, SpecError
from sparkspec.config import schema
from sparkspec.config.model import (
    DEFAULT_REQUESTS_PER_MINUTE,
    MAX_TAKES,
    Budget,
    REMOTE_PARALLELISM,
    PollConfig,
    Project,
    ProviderConfig,
    RemoteConfig,
    Scene,
    SequenceSpec,
)
from sparkspec.config.jinja_env import LOOP, Templates, inside, symlink_loop
from sparkspec.config.scene_templates import TemplatedFields, merge_variables, scene_variables
from sparkspec.config.values import (
    SCENE_ID,
    TAKE_ID,
    as_mapping,
    canonical_json,
    declared_ids,
    did_you_mean,
    is_int,
    is_number,
    is_scalar,
    slugify,
    typed,
    unique,
    whole_numbers,
)
from sparkspec.config.yamlsource import Document, Path as KeyPath, load_yaml
from sparkspec.remote.settings import IN_THE_ENVIRONMENT, url_credentials, url_problem

__all__ = ["LoadOptions", "Loaded", "load_project", "slugify"]

# `--rs 720p`, `--seed=7`: upstream's text commands, as words of their own in a prompt.
ARK_COMMAND = re.compile(r"(?<!\S)--(?:%s)(?=[\s=]|$)" % "|".join(apifacts.ARK_TEXT_COMMANDS), re.IGNORECASE)

TASK_OPTIONS = ("service_tier", "execution_expires_after", "callback_url")  # API options of a task
# Scenes one matrix may expand to: a few lines of ten values each would otherwise make a
# validate run for hours and hold gigabytes (a spec from a pull request must not hang CI).
MAX_MATRIX_SCENES = 10_000
MAX_MATRICES_SCENES = 100_000  # all of a spec's matrices together


@dataclass(frozen=True)
class LoadOptions:
    variables: tuple[str, ...] = ()  # --var K=V, in order
    var_files: tuple[str, ...] = ()  # --var-file F, in order
    provider: str | None = None  # --provider TYPE


@dataclass(frozen=True)
class Loaded:
    project: Project
    warnings: tuple[Diagnostic, ...]


def local_parallelism() -> int:
    """The local renderer's default renders at once: the CPU count (DESIGN section 1)."""
    return os.cpu_count() or 1


def no_scene_hint(name: str, declared: Mapping[str, Any], data: Mapping[str, Any]) -> str:
    """What a reference to a scene that is not one may have meant: a take (`hero.take2`), a
    sequence (sequences list scenes), else the nearest id."""
    take = TAKE_ID.fullmatch(name)
    if take is not None and take["scene"] in declared:
        return (f"; a take is not a scene: what is chained after {take['scene']} starts from its picked "
                f"take, so set `pick: {take['take']}` on {take['scene']}")
    sequences = as_mapping(data.get("sequences"))
    if name in sequences and name not in declared:
        members = as_mapping(sequences[name]).get("scenes")
        listed = ", ".join(str(m) for m in members) if isinstance(members, list) else ""
        return f"; {name!r} is a sequence, and sequences list scenes" + (f": list its scenes ({listed})" if listed else "")
    return did_you_mean(name, declared)


def project_above(spec_path: Path) -> Path | None:
    """The spec of the project this folder is inside, when `spec_path` is a bare name that
    is not here but is in a folder above."""
    if not spec_path.is_absolute() and len(spec_path.parts) == 1:
        for parent in Path.cwd().parents:
            if (parent / spec_path.name).is_file():
                return parent / spec_path.name
    return None


def missing_spec(spec_path: Path, display: str) -> str:
    """What to say of a spec that is not there: the project above, when this is a folder
    inside one (run from there: `init` here would start a second project inside it), else `init`."""
    above = project_above(spec_path)
    if above is not None:
        return (f"{display}: no such file here; this folder is inside the project at "
                f"{above}: run sparkspec there, or pass -C {above.parent}")
    return f"{display}: no such file; run `sparkspec init` to start a project, or pass -f FILE"


def require_spec(spec_path: Path, display: str) -> None:
    """For commands that read the project's state rather than its spec (show, gc, doctor): the
    spec must be a file, else the state folder beside it would be some other folder's."""
    if spec_path.is_dir():
        raise SparkspecError(f"{display}: is a folder, not a spec file; pass -f FILE (the project's .spark.yaml)")
    if not spec_path.exists():
        raise SparkspecError(missing_spec(spec_path, display))


def load_project(spec_path: Path, options: LoadOptions = LoadOptions(),
                 display: str | None = None) -> Loaded:
    """Load, validate and resolve a spec. Raises SpecError with every diagnostic."""
    display = display or str(spec_path)
    try:
        raw = read_regular(spec_path)
    except FileNotFoundError:
        raise SparkspecError(missing_spec(spec_path, display)) from None
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


STATE_FOLDER = ".sparkspec"  # sparkspec's state beside the spec (state.workspace): never an output folder


class _Resolver:
    def __init__(self, spec_path: Path, doc: Document, digest: str, options: LoadOptions) -> None:
        self.spec_path = spec_path.resolve()
        self.root = self.spec_path.parent
        self.doc = doc
        self.digest = digest
        self.options = options
        self.diagnostics: list[Diagnostic] = list(doc.diagnostics)
        self.matrix_scenes = 0  # made by the matrices so far (MAX_MATRICES_SCENES)
        self.templates = Templates(self.root)
        self.fields = TemplatedFields(doc, self.root, self.templates, self.diagnostics)
        self.kind = "spark"  # the provider type in force, once read

    # -- diagnostics ------------------------------------------------------------------
    def report(self, path: KeyPath, message: str, *, at_key: bool = False,
               severity: Severity = "error") -> None:
        self.diagnostics.append(self.doc.diagnostic(path, message, at_key=at_key, severity=severity))

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
        whole_numbers(data)
        if self.doc.escapes_nul:
            self.check_no_nul(data, ())
        self.check_not_nan(data)
        self.check_budget(data)
        self.check_remote_urls(data)
        given: list[Diagnostic] = []
        variables, problems = merge_variables(data.get("vars"), self.options.var_files,
                                              self.options.variables, given)
        self.diagnostics.extend(problems)
        provider = self.provider(data)
        # The API options a provider sets hold for every scene that sets none (a scene's own or
        # `defaults` win): `service_tier: flex` on the provider is half price for all of them.
        provider_options = {k: v for k, v in as_mapping(data.get("provider")).items() if k in TASK_OPTIONS}
        defaults = {**provider_options, **as_mapping(data.get("defaults"))}
        scenes, variants = self.scenes(data, defaults, variables)
        self.check_references(data, scenes, variants)
        sequences = self.sequences(data, scenes, variants)
        self.check_variables_used(given, data.get("scenes"))
        output_dir = typed(data, "output_dir", str, "renders")
        if inside(self.root, output_dir) is None:
            what = f"{output_dir!r}" if "output_dir" in data else f"the output folder {output_dir!r} (output_dir's default)"
            link = LOOP if symlink_loop(self.root, output_dir) else \
                " (it is a symlink that leads outside)" if (self.root / output_dir).is_symlink() else ""
            self.report(("output_dir",), f"{what} must be a folder inside the project{link}")
        else:  # one spelling of the folder, so the lock's paths compare as strings
            output_dir = posixpath.normpath(output_dir)
            if output_dir.split("/", 1)[0] == STATE_FOLDER:
                self.report(("output_dir",), f"{output_dir!r} is inside {STATE_FOLDER}/, sparkspec's own state (its cache "
                                             "and journal, git-ignored); choose another folder")
            elif "output_dir" in data and (self.root / output_dir).is_file():  # (the default's: apply says)
                self.report(("output_dir",), f"{output_dir!r} is a file; output_dir names a folder")
        self.check_output_names(sequences, scenes, output_dir)
        diagnostics = unique(self.diagnostics)
        if has_errors(diagnostics):
            raise SpecError(diagnostics)
        project = Project(
            spec_path=self.spec_path, display_path=self.doc.file, root=self.root,
            name=typed(data, "name", str, self.root.name), salt=typed(data, "salt", str, ""),
            output_dir=output_dir, provider=provider, scenes=scenes, sequences=sequences,
            spec_sha256=self.digest,
            vars_sha256=hashlib.sha256(canonical_json(variables).encode()).hexdigest(),
            templates_sha256=self.templates.digest(), remote=self.remote(data), budget=budget(data))
        return Loaded(project, tuple(diagnostics))

    def provider(self, data: dict[str, Any]) -> ProviderConfig:
        raw = as_mapping(data.get("provider"))
        poll = as_mapping(raw.get("poll"))
        initial = typed(poll, "initial", (int, float), 2.0)
        ceiling = typed(poll, "max", (int, float), max(15.0, float(initial)))
        if ceiling < initial:
            self.report(("provider", "poll", "max"),
                        f"{ceiling} is below poll.initial ({initial}); raise max or lower initial")
        price = raw.get("price_per_million_tokens")
        spec_type = typed(raw, "type", str, "spark")
        kind = self.options.provider or spec_type
        # --provider another type keeps none of the spec's model, key variable or URL.
        own = raw if kind == spec_type else {}
        model = typed(own, "model", str, apifacts.ARK_MODEL if kind == "ark" else apifacts.MODEL)
        if kind != "ark" and model != apifacts.MODEL:
            self.report(("provider", "model"), f"must be {apifacts.MODEL!r}, not {model!r} for type {kind} "
                        f"(a ModelArk model id needs `type: ark`)")
        if kind == "ark" and model == apifacts.MODEL:
            self.report(("provider", "model"), f"{model!r} is the gateway's model id, which ModelArk does not know; "
                        f"use {apifacts.ARK_MODEL!r} (or the doubao- id on Volcengine, or an endpoint id ep-...), "
                        "or `type: spark` for the gateway")
        if "protocol" in own and kind != "spark":
            self.report(("provider", "protocol"), f"protocol is an option of type spark only, not {kind}",
                        at_key=True)
        self.kind = kind
        # The API renders 10 tasks of an account at once (more wait in its queue); local renders on the CPUs.
        parallelism = local_parallelism() if kind == "local" else REMOTE_PARALLELISM
        return ProviderConfig(
            type=kind, model=model, protocol=typed(own, "protocol", str, "generation"),
            base_url=typed(own, "base_url", str, None),
            api_key_env=typed(own, "api_key_env", str, "ARK_API_KEY" if kind == "ark" else "SPARK_API_KEY"),
            parallelism=typed(raw, "parallelism", int, parallelism),
            requests_per_minute=typed(raw, "requests_per_minute", int, DEFAULT_REQUESTS_PER_MINUTE),
            poll=PollConfig(float(initial or 0), float(ceiling or 0)),
            price_per_million_tokens=float(price) if isinstance(price, (int, float)) and is_number(price) else None)

    def remote(self, data: dict[str, Any]) -> RemoteConfig | None:
        if "remote" not in data:
            return None
        raw = as_mapping(data.get("remote"))
        ttl = typed(raw, "claim_ttl", (int, float), None)
        return RemoteConfig(url=typed(raw, "url", str, None), endpoint=typed(raw, "endpoint", str, None),
                            region=typed(raw, "region", str, None),
                            claim_ttl=float(ttl) if ttl is not None and ttl > 0 else None)

    # -- scenes --------------------------------------------------------------------------
    def scenes(self, data: dict[str, Any], defaults: dict[str, Any], variables: dict[str, Any]
               ) -> tuple[dict[str, Scene], dict[str, list[str]]]:
        scenes: dict[str, Scene] = {}
        variants: dict[str, list[str]] = {}  # matrix scene id -> its expanded ids
        origin: dict[str, tuple[str, dict[str, Any] | None]] = {}  # id -> the scene and matrix values giving it
        default_length = self.length(defaults, ("defaults",))
        for sid, raw in as_mapping(data.get("scenes")).items():
            if not isinstance(raw, dict) or not SCENE_ID.fullmatch(sid):
                continue
            path: KeyPath = ("scenes", sid)
            collided: set[str] = set()  # the scenes this one was reported against: once each
            alike = self.values_alike(sid, raw)
            for eid, combo in self.expand(sid, raw):
                if eid in origin:
                    other, other_combo = origin[eid]
                    if other == sid and any(other_combo and combo and other_combo[k] != combo[k]
                                            for k in alike):
                        continue  # reported with every value of its kind
                    if other not in collided:
                        collided.add(other)
                        self.report(path, _collision(eid, sid, combo, other, other_combo), at_key=True)
                    continue
                origin[eid] = (sid, combo)
                if combo is not None:
                    variants.setdefault(sid, []).append(eid)
                scene = self.scene(eid, sid, raw, combo, defaults, default_length, variables)
                if scene is not None:
                    scenes[eid] = scene
        return scenes, variants

    def values_alike(self, sid: str, raw: dict[str, Any]) -> set[str]:
        """Report each set of one matrix key's values that slugify alike (they would give one id),
        all of its values at once; the keys that have such a set."""
        keys: set[str] = set()
        for name, values in as_mapping(raw.get("matrix")).items():
            if not isinstance(values, list):
                continue
            by_slug: dict[str, list[Any]] = {}
            for value in values:
                if is_scalar(value):
                    same = by_slug.setdefault(slugify(value), [])
                    if value not in same:
                        same.append(value)
            for slug, same in by_slug.items():
                if len(same) > 1:
                    keys.add(name)
                    listed = ", ".join(f"{v!r}" for v in same[:-1]) + f" and {same[-1]!r}"
                    self.report(("scenes", sid, "matrix", name),
                                f"values {listed} {'both' if len(same) == 2 else 'all'} give id part {slug!r} "
                                f"(values are slugified: lower case, other characters to -), so {sid}'s ids "
                                "would collide; make them differ", at_key=True)
        return keys

    def expand(self, sid: str, raw: dict[str, Any]) -> list[tuple[str, dict[str, Any] | None]]:
        matrix = raw.get("matrix")
        if matrix is None:
            return [(sid, None)]
        if not isinstance(matrix, dict) or not matrix or not all(
                isinstance(v, list) and v and all(is_scalar(x) for x in v) for v in matrix.values()):
            return []  # the schema reported it
        names = list(matrix)
        count = math.prod(len(matrix[n]) for n in names)
        if count > MAX_MATRIX_SCENES:
            self.report(("scenes", sid, "matrix"), f"expands to {count:,} scenes "
                        f"({' x '.join(str(len(matrix[n])) for n in names)}); a matrix makes at most "
                        f"{MAX_MATRIX_SCENES:,}: split it into several scenes", at_key=True)
            return []
        self.matrix_scenes += count
        if self.matrix_scenes > MAX_MATRICES_SCENES:
            self.report(("scenes", sid, "matrix"), f"the spec's matrices make more than "
                        f"{MAX_MATRICES_SCENES:,} scenes in all; split the project", at_key=True)
            return []
        out: list[tuple[str, dict[str, Any] | None]] = []
        for values in itertools.product(*(matrix[n] for n in names)):
            eid = "-".join([sid] + [slugify(v) for v in values])
            if not SCENE_ID.fullmatch(eid):
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
        if isinstance(frames, int) and is_int(frames):
            if not apifacts.valid_frames(frames) and 29 <= frames <= 289:
                self.report(path + ("frames",), f"{frames} is not 25+4n in [29, 289]; "
                            f"use {frames - (frames - 25) % 4} or {frames - (frames - 25) % 4 + 4}")
            return ("frames", frames)
        if isinstance(duration, int) and is_int(duration):
            return ("duration", duration)
        return None

    def scene(self, eid: str, sid: str, raw: dict[str, Any], combo: dict[str, Any] | None,
              defaults: dict[str, Any], default_length: tuple[str, int] | None,
              variables: dict[str, Any]) -> Scene | None:
        path: KeyPath = ("scenes", sid)
        context = scene_variables(variables, raw.get("vars"), combo)
        prompt = self.fields.prompt(raw, path, context, None if combo is None else (eid, combo))
        first = as_mapping(raw.get("first_frame"))
        upstream = first.get("scene") if isinstance(first.get("scene"), str) else None
        image = self.fields.image(first.get("image"), path + ("first_frame", "image"), context)

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
        if prompt is not None and self.kind == "ark":
            command = ARK_COMMAND.search(prompt)
            if command:
                where = path + (("prompt",) if "prompt" in raw else ("prompt_file",))
                self.report(where, f"the prompt contains {command.group(0).strip()!r}, one of upstream's text "
                            f"commands; ModelArk may read it as a parameter. Set parameters as keys, and "
                            f"reword the prompt", severity="warning")
        takes, chosen = pick("takes", int, 1), pick("pick", int, 1)
        if 1 <= takes <= MAX_TAKES and chosen > takes:
            where, whose = (path + ("pick",), "") if "pick" in raw else (("defaults", "pick"), f" of scene {sid}")
            fix = f"pick one of 1..{takes}" if takes > 1 else "use pick: 1"
            self.report(where, f"pick {chosen} is greater than takes ({takes}){whose}; {fix} or raise takes")
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
            description=raw.get("description") if isinstance(raw.get("description"), str) else None,
            takes=takes, pick=chosen)

    # -- the graph -------------------------------------------------------------------------
    def check_references(self, data: dict[str, Any], scenes: dict[str, Scene],
                         variants: dict[str, list[str]]) -> None:
        upstreams: dict[str, str | None] = {}
        declared = declared_ids(data, variants)
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
                upstreams[eid] = up  # that scene has errors of its own; a cycle through it is still one
                continue
            else:
                self.report(where, f"no scene {up!r}{no_scene_hint(up, declared, data)}")
            upstreams[eid] = None
        # A plain scene that did not resolve (its prompt failed, say) still names its upstream:
        # a reference to nothing, or a cycle through it, is reported in the same run.
        for sid, raw in as_mapping(data.get("scenes")).items():
            if sid in scenes or sid in variants:
                continue
            up = as_mapping(as_mapping(raw).get("first_frame")).get("scene")
            if not isinstance(up, str):
                continue
            if up in declared or up in scenes:
                upstreams[sid] = up
            elif up not in variants:
                self.report(("scenes", sid, "first_frame", "scene"), f"no scene {up!r}{no_scene_hint(up, declared, data)}")
        order = [*declared, *scenes]  # spec order: a cycle is named from its first scene
        for cycle in graph.find_cycles({k: upstreams[k] for k in dict.fromkeys(order) if k in upstreams}):
            scene_id = cycle[0]
            self.report(("scenes", scenes[scene_id].source_id if scene_id in scenes else scene_id),
                        f"first_frame cycle: {' -> '.join(cycle + [cycle[0]])}; a scene cannot start "
                        "from its own last frame", at_key=True)

    def check_variables_used(self, given: list[Diagnostic], scenes: Any = None) -> None:
        """A `--var` or a var file's variable no template reads is most likely misspelt: warn
        (as terraform does) rather than plan "No changes". So is one that every scene whose
        templates read it sets itself (its `vars` or `matrix`): the value reaches no template.
        `given`: where each was set; `scenes`: the spec's, as written."""
        if not given:
            return
        used = self.templates.variables_used()
        reached = self.variables_reached(scenes)
        warned: set[tuple[str, str]] = set()
        for where in given:
            name = where.path
            if not name or (where.file, name) in warned:
                continue
            if name not in used:
                hint = did_you_mean(name, dict.fromkeys(sorted(used)))
                message = f"{name!r} is used by no template{hint}"
            elif reached is not None and name not in reached:
                message = (f"{name!r} is set in the vars or matrix of every scene whose template reads it, "
                           "so this value reaches no template")
            else:
                continue
            warned.add((where.file, name))
            self.diagnostics.append(Diagnostic(where.file, where.line, where.column, "warning", "", message))

    def variables_reached(self, scenes: Any) -> set[str] | None:
        """The names some scene's templates read without setting them itself (in its `vars` or
        `matrix`): where a project-wide value shows. None when a template's names cannot be told."""
        reached: set[str] = set()
        for raw in as_mapping(scenes).values():
            raw = as_mapping(raw)
            own = set(as_mapping(raw.get("vars"))) | set(as_mapping(raw.get("matrix")))
            image = as_mapping(raw.get("first_frame")).get("image")
            for source, file in ((raw.get("prompt"), None), (None, raw.get("prompt_file")), (image, None)):
                if not isinstance(source, str) and not (isinstance(file, str) and inside(self.root, file)):
                    continue
                names = self.templates.names_read(source if isinstance(source, str) else None,
                                                  file if isinstance(file, str) else None)
                if names is None:
                    return None
                reached |= names - own
        return reached

    def check_no_nul(self, node: Any, path: KeyPath) -> None:
        """A NUL character (YAML's "\\0") fits in no file name, prompt or URL: reported where it
        is, and taken out so that the checks after this one see the rest of the value."""
        items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
        for name, value in list(items):
            if isinstance(value, str) and "\0" in value:
                self.report(path + (name,), "contains a NUL character (\\0), which no file name, prompt or "
                                            "URL can hold; remove it")
                node[name] = value.replace("\0", "")
            else:
                self.check_no_nul(value, path + (name,))

    def check_not_nan(self, data: dict[str, Any]) -> None:
        """YAML's `.nan` passes every range in the schema (each comparison is false), and a
        budget or a price of nan would silently be none."""
        for path in _REAL_FIELDS:
            value: Any = data
            for part in path:
                value = as_mapping(value).get(part)
            if isinstance(value, float) and math.isnan(value):
                self.report(path, "nan is not a number")

    def check_remote_urls(self, data: dict[str, Any]) -> None:
        """`s3://KEY:SECRET@bucket` or a pre-signed endpoint would put a credential in git."""
        for name in ("url", "endpoint"):
            value = as_mapping(data.get("remote")).get(name)
            if isinstance(value, str) and url_credentials(value):
                self.report(("remote", name), f"credentials never go in the spec (it is shared in git); "
                                              f"{IN_THE_ENVIRONMENT}")
            elif name == "url" and isinstance(value, str) and (problem := url_problem(value)) is not None:
                self.report(("remote", name), problem)  # as plan and apply would refuse it

    def check_budget(self, data: dict[str, Any]) -> None:
        """A cost budget is checked against the plan's estimated cost, which needs a price."""
        if (as_mapping(data.get("budget")).get("max_cost") is not None
                and as_mapping(data.get("provider")).get("price_per_million_tokens") is None):
            self.report(("budget", "max_cost"), "a cost budget needs provider.price_per_million_tokens "
                        "(the plan's cost is estimated from it); set the price, or use max_tokens")

    def check_output_names(self, sequences: dict[str, SequenceSpec], scenes: dict[str, Scene],
                           output_dir: str) -> None:
        """A sequence's video and a scene's video share a folder: their names must differ."""
        for name in sequences:
            if name in scenes:
                self.report(("sequences", name), f"sequence {name!r} and scene {name!r} would both write "
                            f"{posixpath.join(output_dir, name)}.mp4; rename one of them", at_key=True)

    def sequences(self, data: dict[str, Any], scenes: dict[str, Scene],
                  variants: dict[str, list[str]]) -> dict[str, SequenceSpec]:
        out: dict[str, SequenceSpec] = {}
        declared = declared_ids(data, variants)
        for name, raw in as_mapping(data.get("sequences")).items():
            members = as_mapping(raw).get("scenes")
            if not isinstance(members, list) or not SCENE_ID.fullmatch(name):
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
                    self.report(where, f"no scene {member!r}{no_scene_hint(member, declared, data)}")
            if ok and all(isinstance(m, str) for m in members):
                out[name] = SequenceSpec(name, tuple(members))
        return out


# The spec's fields that take any real number (integers are checked by the schema).
_REAL_FIELDS = (("budget", "max_cost"), ("provider", "price_per_million_tokens"),
                ("provider", "poll", "initial"), ("provider", "poll", "max"), ("remote", "claim_ttl"))


def budget(data: dict[str, Any]) -> Budget:
    raw = as_mapping(data.get("budget"))
    cost = typed(raw, "max_cost", (int, float), None)
    return Budget(max_tokens=typed(raw, "max_tokens", int, None),
                  max_cost=float(cost) if cost is not None else None)


def _collision(eid: str, sid: str, combo: dict[str, Any] | None, other: str,
               other_combo: dict[str, Any] | None) -> str:
    """Why two producers give one id, naming the matrix values that slugify alike."""
    def values(c: dict[str, Any] | None) -> str:
        return "matrix values " + ", ".join(f"{k}={v!r}" for k, v in (c or {}).items())

    if other == sid:
        return (f"id {eid!r} is produced twice, by {values(other_combo)} and {values(combo)} (values are "
                "slugified: lower case, other characters to -); change one of them")
    mine = values(combo) if combo else "this scene"
    by = f"scene {other!r}" + (f" ({values(other_combo)})" if other_combo else "")
    return f"id {eid!r} is produced twice, by {mine} and by {by}; rename a scene or change a matrix value"
