"""Small pure helpers over the spec's raw YAML values, shared by the loader's parts.

The schema has already reported every wrong type; these read what is usable and fall
back quietly, so one problem is never reported twice.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import re
import unicodedata
from collections.abc import Mapping, Sequence
from typing import Any

from sparkspec.diagnostics import Diagnostic

SCENE_ID = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")  # used with fullmatch: no trailing newline
TAKE_ID = re.compile(r"(?P<scene>.+)\.take(?P<take>[0-9]+)")  # one take of a scene, as the plan prints it
_SLUG_RUNS = re.compile(r"[^a-z0-9]+")
_INTEGER_FIELDS = ("duration", "frames", "seed", "execution_expires_after", "parallelism",
                   "requests_per_minute", "takes", "pick")


def slugify(value: Any) -> str:
    """Lower case, runs of other characters as `-`. A value with nothing left (拿铁, ☕, "!")
    gets `x` and the first 8 hex digits of its text's sha256: distinct, and the same on every run.
    So does a value that lost more than accents on the way ("拿铁 latte", "抹茶 latte"), after
    what was left: `latte-x1a2b3c4d`, where two such values would otherwise both be `latte`."""
    text = str(value)
    slug = _SLUG_RUNS.sub("-", text.lower()).strip("-")
    tag = "x" + hashlib.sha256(text.encode("utf-8")).hexdigest()[:8]
    if not slug:
        return tag
    lost = any(ord(c) > 127 and not unicodedata.combining(c) for c in unicodedata.normalize("NFKD", text))
    return f"{slug}-{tag}" if lost else slug


def as_mapping(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def typed(mapping: Mapping[str, Any], key: str, kind: type | tuple[type, ...], default: Any) -> Any:
    value = mapping.get(key)
    if isinstance(value, kind) and not (isinstance(value, bool) and kind is not bool):
        return value
    return default


def is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def is_scalar(value: Any) -> bool:
    return isinstance(value, (str, int, float, bool))


def canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def unique(diagnostics: Sequence[Diagnostic]) -> list[Diagnostic]:
    return list(dict.fromkeys(diagnostics))


def whole_numbers(data: dict[str, Any]) -> None:
    """JSON Schema counts 4.0 as an integer, so editors accept it: take it as 4, not ignore it."""
    levels = [as_mapping(data.get("defaults")), as_mapping(data.get("provider"))]
    levels += [scene for scene in as_mapping(data.get("scenes")).values() if isinstance(scene, dict)]
    for level in levels:
        for name in _INTEGER_FIELDS:
            value = level.get(name)
            if isinstance(value, float) and value.is_integer():
                level[name] = int(value)


def declared_ids(data: dict[str, Any], variants: dict[str, list[str]]) -> dict[str, None]:
    """Every scene id the spec declares, resolved or not: plain ids and matrix expansions."""
    plain = (sid for sid in as_mapping(data.get("scenes")) if sid not in variants)
    return dict.fromkeys([*plain, *(eid for ids in variants.values() for eid in ids)])


def did_you_mean(name: str, options: Mapping[str, Any]) -> str:
    hint = difflib.get_close_matches(name, list(options), n=1, cutoff=0.6)
    return f"; did you mean {hint[0]!r}?" if hint else ""
