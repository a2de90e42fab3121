"""The JSON Schema of the spec, and its errors as positioned diagnostics."""

from __future__ import annotations

import difflib
import functools
import json
from importlib import resources
from pathlib import Path
from typing import Any

from sparkspec.diagnostics import Diagnostic
from sparkspec.config.schemacheck import Check, compile_schema
from sparkspec.config.yamlsource import Document
from sparkspec.remote.settings import credential_like, not_a_remote_url, url_problem

SCHEMA_NAME = "project.spark.schema.json"


@functools.cache
def schema_text() -> str:
    packaged = resources.files("sparkspec").joinpath(SCHEMA_NAME)
    if packaged.is_file():
        return packaged.read_text(encoding="utf-8")
    # An editable install reads the schema from the source tree.
    source = Path(__file__).resolve().parents[2] / "schemas" / SCHEMA_NAME
    return source.read_text(encoding="utf-8")


@functools.cache
def schema() -> dict[str, Any]:
    """The schema validation checks against: the shipped one without its `allOf`s, which are
    editors' hints (a scene gives prompt or prompt_file, not duration and frames, ...) that
    the loader checks itself and reports in its own words, at the right line."""
    loaded: dict[str, Any] = _without_hints(json.loads(schema_text()))
    return loaded


def _without_hints(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: _without_hints(v) for k, v in node.items() if k != "allOf"}
    if isinstance(node, list):
        return [_without_hints(v) for v in node]
    return node


@functools.cache
def _validator() -> Any:
    import jsonschema

    return jsonschema.Draft202012Validator(schema())


@functools.cache
def _is_valid() -> Check | None:
    return compile_schema(schema())


def validate(doc: Document) -> list[Diagnostic]:
    """Every schema violation in the document, each at its YAML position."""
    # The compiled check says "valid" for most specs in a fraction of jsonschema's time;
    # jsonschema (and its import) is for finding and explaining the errors.
    is_valid = _is_valid()
    if is_valid is not None and is_valid(doc.data):
        return []
    errors = list(_validator().iter_errors(doc.data))
    if _restore_text(doc, errors):
        errors = list(_validator().iter_errors(doc.data))
    # A value not of its kind (`seed: .inf`) is said to be so once, not also out of its range.
    mistyped = {tuple(e.absolute_path) for e in errors if e.validator == "type"}
    diagnostics: list[Diagnostic] = []
    for error in errors:
        if error.validator in _KIND_BOUND and tuple(error.absolute_path) in mistyped:
            continue
        diagnostics.extend(_diagnose(doc, error))
    return diagnostics


_KIND_BOUND = ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf")


def _names_a_scene(path: tuple[Any, ...]) -> bool:
    """`first_frame: {scene: ID}` and `sequences: {NAME: {scenes: [ID, ...]}}`."""
    return (path[-2:] == ("first_frame", "scene")
            or (len(path) == 4 and path[0] == "sequences" and path[2] == "scenes"))


def _restore_text(doc: Document, errors: list[Any]) -> bool:
    """Put back the text of a scene id that YAML 1.1 misread as another type.

    Ids are keys, which the loader keeps as written; where a value names a scene,
    `scenes: [no, on]` are the scenes `no` and `on`, not two booleans.
    """
    restored = False
    for error in errors:
        path = tuple(error.absolute_path)
        text = doc.plain_text.get(path)
        if error.validator != "type" or text is None or not _names_a_scene(path):
            continue
        parent = doc.data
        for part in path[:-1]:
            parent = parent[part]
        parent[path[-1]] = text
        restored = True
    return restored


def _diagnose(doc: Document, error: Any) -> list[Diagnostic]:
    path = tuple(error.absolute_path)
    keyword = error.validator
    subschema = error.schema if isinstance(error.schema, dict) else {}
    instance = error.instance

    at = doc.diagnostic

    if keyword == "additionalProperties" and isinstance(instance, dict):
        known = sorted(subschema.get("properties", {}))
        out = []
        for key in instance:
            if key in known:
                continue
            if path == ("remote",) and credential_like(str(key)):
                where = ("export SPARKSPEC_REMOTE_SIGNING_KEY instead" if "sign" in str(key).lower() else
                         "set them in the environment (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_PROFILE, ...)")
                out.append(at(path + (key,), f"{key!r}: credentials never go in the spec (it is shared in "
                              f"git); {where}", at_key=True))
                continue
            hint = difflib.get_close_matches(str(key), known, n=1, cutoff=0.6)
            suggestion = f"; did you mean {hint[0]!r}?" if hint else f"; allowed: {', '.join(known)}"
            out.append(at(path + (key,), f"unknown key {key!r}{suggestion}", at_key=True))
        return out
    # jsonschema reports a bad property name by the keyword inside propertyNames (`pattern`).
    if keyword == "propertyNames" or "propertyNames" in list(error.absolute_schema_path)[-2:-1]:
        key = instance
        return [at(path + (key,),
                   f"id {key!r} must match ^[a-z0-9][a-z0-9_-]{{0,63}}$ "
                   "(start with a lower-case letter or digit; then lower-case letters, digits, - or _)",
                   at_key=True)]
    if keyword == "required":
        missing = error.validator_value
        absent = [k for k in missing if isinstance(instance, dict) and k not in instance]
        return [at(path, f"missing required key {key!r}") for key in absent]
    if keyword in ("minimum", "maximum"):
        low, high = subschema.get("minimum"), subschema.get("maximum")
        if low is not None and high is not None:
            return [at(path, f"{instance} is not in {low}..{high}")]
        return [at(path, f"{instance} is {'below' if keyword == 'minimum' else 'above'} {error.validator_value}")]
    if keyword == "exclusiveMinimum":
        return [at(path, f"{instance} must be greater than {error.validator_value}")]
    if keyword == "enum":
        allowed = ", ".join(str(v) for v in error.validator_value)
        hint = _nearest_ratio(str(instance), [str(v) for v in error.validator_value]) if path[-1:] == ("ratio",) \
            else []
        hint = hint or difflib.get_close_matches(str(instance), [str(v) for v in error.validator_value], n=1)
        suggestion = f"; did you mean {hint[0]!r}?" if hint else ""
        return [at(path, f"{instance!r} is not one of {allowed}{suggestion}")]
    if keyword == "const":
        return [at(path, f"must be {error.validator_value!r}, not {instance!r}")]
    if keyword == "type":
        wanted = error.validator_value
        names = wanted if isinstance(wanted, list) else [wanted]
        if "number" in names and "integer" in names:
            names = [n for n in names if n != "integer"]  # every integer is a number
        nouns = [_article(n) for n in names]
        either = nouns[0] if len(nouns) == 1 else f"{', '.join(nouns[:-1])} or {nouns[-1]}"
        return [at(path, f"{_show(instance)} is not {either}")]
    if keyword == "minProperties" and isinstance(instance, dict):
        if path == ("scenes",):
            return [at(path, "at least one scene is required")]
        return [at(path, "must not be empty")]
    if keyword == "maxProperties" and path[-1:] == ("first_frame",):
        if isinstance(instance, dict) and {"image", "scene"} <= set(instance):
            return [at(path, "give either image or scene, not both")]
        return []  # a misspelt key beside the one given: the unknown key is said, with a did-you-mean
    if keyword == "minItems":
        return [at(path, "must not be empty")]
    if keyword == "minLength":
        return [at(path, "must not be empty")]
    if keyword == "pattern":
        if path and path[-1] in ("callback_url", "base_url", "endpoint"):
            return [at(path, f"{instance!r} is not an http or https URL")]
        if path == ("remote", "url"):  # in the words the loader's own check uses: one line, not two
            return [at(path, url_problem(str(instance)) or not_a_remote_url(str(instance)))]
        if path[-2:] == ("first_frame", "scene") or (path[:1] == ("sequences",) and "scenes" in path):
            return []  # a reference to a scene: the loader says "no scene 'X'", with a did-you-mean
        if path and path[-1] == "api_key_env":
            return [at(path, f"{instance!r} is not an environment variable's name (letters, digits and _, "
                             "not starting with a digit), such as SPARK_API_KEY")]
        return [at(path, f"{instance!r} does not match {error.validator_value}")]
    return [at(path, error.message)]


def _nearest_ratio(given: str, allowed: list[str]) -> list[str]:
    """The allowed ratio nearest in shape to `16:10` (16:9), where spelling would say 1:1."""
    import math

    def shape(ratio: str) -> float | None:
        w, _, h = ratio.partition(":")
        return math.log(int(w) / int(h)) if w.isdigit() and h.isdigit() and int(w) and int(h) else None

    wanted = shape(given)
    shapes = [(abs(s - wanted), r) for r in allowed if (s := shape(r)) is not None] if wanted is not None else []
    return [min(shapes)[1]] if shapes else []


def _show(value: Any) -> str:
    if isinstance(value, (dict, list)):
        return "a mapping" if isinstance(value, dict) else "a list"
    if value is None:
        return "an empty value"
    if isinstance(value, bool):  # as the spec spells it (YAML), not as Python does
        return "true" if value else "false"
    return repr(value)


def _article(type_name: str) -> str:
    nouns = {"object": "a mapping", "array": "a list", "string": "a string", "integer": "an integer",
             "number": "a number", "boolean": "true or false", "null": "empty"}
    return nouns.get(type_name, type_name)
