"""The compiled validity check answers exactly as jsonschema does, on spec-like documents.

`validate` trusts a "valid" from the compiled check and never asks jsonschema, so any
disagreement lets a bad spec through (or sends a good one down the slow path). The
property test starts from a valid spec and mutates it: drops and adds keys (unknown
ones, bad ids, keys that are not strings), swaps value types (1.0 for 1, True for 1,
None, lists, mappings), and puts numbers just outside their ranges and strings just
outside their enums and patterns.
"""

from __future__ import annotations

import copy
from typing import Any

import jsonschema
import pytest
from hypothesis import HealthCheck, event, example, given, note, settings
from hypothesis import strategies as st

from sparkspec.config.schema import schema
from sparkspec.config.schemacheck import compile_schema

SCHEMA = schema()
JSONSCHEMA = jsonschema.Draft202012Validator(SCHEMA)

KeyPath = tuple[Any, ...]

# -- valid specs ----------------------------------------------------------------------

ids = st.from_regex(r"\A[a-z0-9][a-z0-9_-]{0,11}\Z") | st.sampled_from(["a", "0", "a" * 64])
texts = st.text(min_size=1, max_size=12)
urls = st.sampled_from(["http://example.com/hook", "https://x", "https://example.com/a?b=c"])


def _integer(low: int, high: int) -> st.SearchStrategy[int | float]:
    """An integer in range, sometimes as its float twin: 5.0 is an integer too."""
    return st.integers(low, high) | st.integers(low, high).map(float)


def _render_settings(draw: st.DrawFn) -> dict[str, Any]:
    """The keys scenes and defaults share, each present or not."""
    choices: dict[str, st.SearchStrategy[Any]] = {
        "resolution": st.sampled_from(["480p", "720p", "1080p"]),
        "ratio": st.sampled_from(["16:9", "4:3", "1:1", "3:4", "9:16", "21:9", "adaptive"]),
        "seed": _integer(-1, 2**32 - 1),
        "camera_fixed": st.booleans(),
        "watermark": st.booleans(),
        "service_tier": st.sampled_from(["default", "flex"]),
        "execution_expires_after": _integer(3600, 259200),
        "callback_url": urls,
    }
    out = {key: draw(value) for key, value in choices.items() if draw(st.booleans())}
    length = draw(st.sampled_from(["duration", "frames", None]))
    if length == "duration":
        out["duration"] = draw(_integer(2, 12))
    elif length == "frames":
        out["frames"] = draw(_integer(29, 289))
    return out


@st.composite
def valid_specs(draw: st.DrawFn) -> dict[str, Any]:
    scene_ids = draw(st.lists(ids, min_size=1, max_size=4, unique=True))
    scenes: dict[str, Any] = {}
    for scene_id in scene_ids:
        scene = _render_settings(draw)
        if draw(st.booleans()):
            scene["prompt"] = draw(texts)
        else:
            scene["prompt_file"] = draw(st.sampled_from(["prompts/a.j2", "p.txt"]))
        first = draw(st.sampled_from([None, "image", "scene"]))
        if first == "image":
            scene["first_frame"] = {"image": draw(st.sampled_from(["a.png", "https://x/a.png"]))}
        elif first == "scene":
            scene["first_frame"] = {"scene": draw(st.sampled_from(scene_ids))}
        if draw(st.booleans()):
            scene["matrix"] = draw(st.dictionaries(
                st.sampled_from(["mood", "time", "n"]),
                st.lists(st.text(max_size=5) | st.integers(-3, 3) | st.floats(-2, 2) | st.booleans(),
                         min_size=1, max_size=3),
                min_size=1, max_size=2))
        if draw(st.booleans()):
            scene["vars"] = {"who": draw(texts), "n": draw(st.integers())}
        if draw(st.booleans()):
            scene["description"] = draw(st.text(max_size=8))
        scenes[scene_id] = scene
    doc: dict[str, Any] = {"version": draw(st.sampled_from([1, 1.0])), "scenes": scenes}
    if draw(st.booleans()):
        doc["name"] = draw(st.text(max_size=8))
    if draw(st.booleans()):
        doc["salt"] = draw(st.text(max_size=8))
    if draw(st.booleans()):
        doc["output_dir"] = draw(texts)
    if draw(st.booleans()):
        doc["vars"] = {"place": draw(texts), "list": [1, "two"], "nested": {"a": None}}
    if draw(st.booleans()):
        doc["defaults"] = _render_settings(draw)
    if draw(st.booleans()):
        provider: dict[str, Any] = {"type": draw(st.sampled_from(["spark", "local"]))}
        if draw(st.booleans()):
            provider.update(model="spark_dance_v1_0_pro_fast", base_url=draw(urls),
                            api_key_env=draw(st.sampled_from(["ARK_API_KEY", "_k", "K9"])),
                            parallelism=draw(_integer(1, 64)))
        if draw(st.booleans()):
            provider["poll"] = {"initial": draw(st.floats(0.001, 600) | st.integers(1, 600)),
                                "max": draw(st.floats(0.001, 3600) | st.integers(1, 3600))}
        if draw(st.booleans()):
            provider["price_per_million_tokens"] = draw(st.floats(0, 100) | st.integers(0, 100))
        doc["provider"] = provider
    if draw(st.booleans()):
        doc["sequences"] = {
            name: {"scenes": draw(st.lists(st.sampled_from(scene_ids), min_size=1, max_size=3))}
            for name in draw(st.lists(ids, min_size=1, max_size=2, unique=True))}
    return doc


# -- mutations ------------------------------------------------------------------------

# Values at the edges of what the schema allows: range bounds and one past them, the
# bool/int and int/float twins, near-miss enum strings and ids, almost-URLs.
EDGES: list[Any] = [
    None, True, False, 0, 1, 1.0, -1, -1.0, -2, 2, 2.0, 1.5, 12, 12.0, 12.5, 13,
    28, 29, 29.0, 30.5, 289, 290, 63, 64, 65, 64.0, 600, 600.0, 600.5, 3600, 3599, 3600.0,
    3600.5, 259200, 259201, 4294967295, 4294967296, 4294967295.0, -0.0, 0.0, 1e-9, 1e300,
    float("inf"), float("-inf"), float("nan"),
    "", " ", "1", "480p", "480P", "480", "720p", "1080p", "4k", "16:9", "16/9", "adaptive",
    "Adaptive", "spark", "local", "Spark", "default", "flex", "spark_dance_v1_0_pro_fast",
    "spark_dance", "http://x", "https://x", "ftp://x", "HTTPS://x", " https://x", "http:/x",
    "ARK_API_KEY", "1KEY", "KEY-1", "a", "a-b_c", "A", "-a", "_a", "a\n", "a b", "é",
    "a" * 64, "a" * 65, "prompts/x.j2",
    [], {}, ["a"], [1], [1.0, True], ["a", None], [[]], [{}],
    {"image": "x"}, {"scene": "a"}, {"scene": "A"}, {"image": ""}, {"image": "x", "scene": "a"},
    {"scenes": ["a"]}, {"scenes": []}, {"prompt": "p"}, {"mood": []}, {"mood": ["x"]},
]
KNOWN_KEYS = sorted({
    "version", "name", "salt", "output_dir", "provider", "vars", "defaults", "scenes",
    "sequences", "type", "model", "base_url", "api_key_env", "parallelism", "service_tier",
    "execution_expires_after", "callback_url", "poll", "initial", "max",
    "price_per_million_tokens", "resolution", "ratio", "duration", "frames", "seed",
    "camera_fixed", "watermark", "image", "scene", "description", "prompt", "prompt_file",
    "first_frame", "matrix"})

json_like = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=6),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
    max_leaves=6)
values = st.sampled_from(EDGES).map(copy.deepcopy) | json_like
keys = (st.sampled_from(KNOWN_KEYS) | ids | st.sampled_from(["bogus", "Scene", "a b", "", "-x", "a" * 65])
        | st.integers(-2, 2) | st.just(None) | st.booleans())


def _containers(node: Any, path: KeyPath = ()) -> list[KeyPath]:
    found: list[KeyPath] = []
    if isinstance(node, dict):
        found.append(path)
        for key, value in node.items():
            found.extend(_containers(value, path + (key,)))
    elif isinstance(node, list):
        found.append(path)
        for index, value in enumerate(node):
            found.extend(_containers(value, path + (index,)))
    return found


def _at(doc: Any, path: KeyPath) -> Any:
    for part in path:
        doc = doc[part]
    return doc


@st.composite
def spec_like(draw: st.DrawFn) -> Any:
    doc: Any = draw(valid_specs())
    for _ in range(draw(st.integers(0, 4))):
        containers = _containers(doc)
        if not containers:
            break
        where = draw(st.sampled_from(containers))
        node = _at(doc, where)
        op = draw(st.sampled_from(["drop", "add", "replace", "replace", "replace"]))
        if isinstance(node, list):
            if op == "drop" and node:
                node.pop(draw(st.integers(0, len(node) - 1)))
            elif op == "replace" and node:
                node[draw(st.integers(0, len(node) - 1))] = draw(values)
            else:
                node.append(draw(values))
        elif op == "drop" and node:
            key = draw(st.sampled_from(list(node)))
            note(f"drop {where + (key,)}")
            del node[key]
        elif op == "replace" and node:
            key = draw(st.sampled_from(list(node)))
            node[key] = draw(values)
            note(f"replace {where + (key,)} -> {node[key]!r}")
        else:
            key = draw(keys)
            node[key] = draw(values)
            note(f"add {where + (key,)} = {node[key]!r}")
    if draw(st.integers(0, 49)) == 0:
        doc = draw(values)  # not a mapping at all
    return doc


# -- tests ------------------------------------------------------------------------------

def test_the_shipped_schema_compiles() -> None:
    assert compile_schema(SCHEMA) is not None


@pytest.mark.slow  # over a second and a half: the default run stays under 90 s
@given(valid_specs())
@settings(max_examples=50, deadline=None)
def test_the_generator_starts_from_valid_specs(doc: dict[str, Any]) -> None:
    JSONSCHEMA.validate(doc)


@pytest.mark.slow  # 8 s of Hypothesis on two cores
@given(spec_like())
@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@example({"version": True, "scenes": {"a": {}}})
@example({"version": 1.0, "scenes": {"a": {"duration": 5.0, "seed": 4294967295.0}}})
@example({"version": 1, "scenes": {"a": {"duration": True}}})
# Both accept this id: in Python's re, as jsonschema uses it, `$` matches before a final newline.
@example({"version": 1, "scenes": {"a\n": {}}})
@example({"version": 1, "scenes": {1: {}}})
@example({"version": 1, "scenes": {"a": {"frames": float("nan")}}})
@example({"version": 1, "scenes": {"a": {"matrix": {"m": [None]}}}})
@example({"version": 1, "scenes": {"a": {"first_frame": {}}}})
@example({"version": 1, "scenes": {}, "provider": {"poll": {"initial": 0}}})
@example([])
def test_compiled_check_agrees_with_jsonschema(doc: Any) -> None:
    check = compile_schema(SCHEMA)
    assert check is not None
    expected = JSONSCHEMA.is_valid(doc)
    event("valid" if expected else "invalid")
    assert check(doc) == expected


@pytest.mark.parametrize("unknown", [
    {"type": "string", "format": "email"},
    {"anyOf": [{"type": "string"}, {"type": "null"}]},
    {"type": "object", "properties": {"a": {"type": "array", "uniqueItems": True}}},
    {"type": "object", "patternProperties": {"^x": {"type": "integer"}}},
    {"$ref": "#/$defs/x", "$defs": {"x": {"if": {"type": "string"}, "then": {"minLength": 2}}}},
    {"$ref": "https://example.com/other.json"},
    {"type": "object", "additionalProperties": {"multipleOf": 2}},
    {"type": "object", "properties": {"a": {"$id": "inner", "type": "string"}}},
])
def test_a_schema_beyond_the_compiler_compiles_to_none(unknown: dict[str, Any]) -> None:
    jsonschema.Draft202012Validator.check_schema(unknown)
    assert compile_schema(unknown) is None


def test_the_shipped_schema_with_an_unknown_keyword_compiles_to_none() -> None:
    extended = copy.deepcopy(SCHEMA)
    extended["$defs"]["scene"]["properties"]["prompt"]["format"] = "jinja"
    assert compile_schema(extended) is None


@pytest.mark.parametrize("bad", [
    {"scenes": {"a": {"duration": 5}}},  # neither prompt nor prompt_file
    {"scenes": {"a": {"prompt": "x", "prompt_file": "p.j2"}}},
    {"scenes": {"a": {"prompt": "x", "duration": 5, "frames": 29}}},
    {"defaults": {"duration": 5, "frames": 29}, "scenes": {"a": {"prompt": "x"}}},
    {"scenes": {"a": {"prompt": "x", "ratio": "adaptive"}}},
    {"output_dir": "/tmp/x", "scenes": {"a": {"prompt": "x"}}},
    {"provider": {"type": "local", "protocol": "queue"}, "scenes": {"a": {"prompt": "x"}}},
    {"provider": {"type": "ark", "protocol": "queue"}, "scenes": {"a": {"prompt": "x"}}},
    {"output_dir": "../x", "scenes": {"a": {"prompt": "x"}}},
    {"output_dir": "out/../../x", "scenes": {"a": {"prompt": "x"}}},
    {"scenes": {"a": {"prompt": "x", "first_frame": {"image": "http://example.com/a.png"}}}},
])
def test_the_shipped_schema_tells_editors_what_validate_refuses(bad: dict[str, Any]) -> None:
    # An editor validating against `sparkspec schema` sees these; validate reports them itself.
    import json

    from sparkspec.config.schema import schema_text

    shipped = jsonschema.Draft202012Validator(json.loads(schema_text()))
    assert shipped.is_valid({"version": 1, "scenes": {"a": {"prompt": "x"}}})
    assert not shipped.is_valid({"version": 1, **bad})
