"""A fast yes/no check of a document against the spec's JSON Schema.

jsonschema takes about half a second to walk 10,000 scenes, and almost every
spec it sees is valid. So the schema is compiled once into plain closures that
only answer "valid?", and jsonschema runs, for its errors, only when the answer
is no. The compiler knows the keywords the spec's schema uses, with
jsonschema's Draft 2020-12 semantics (bool is not a number, 1.0 is an integer,
`pattern` is `re.search`); a schema using any other keyword compiles to None
and jsonschema does all the work.
"""

from __future__ import annotations

import numbers
import re
from collections.abc import Callable, Mapping
from typing import Any

Check = Callable[[Any], bool]

_ANNOTATIONS = frozenset({"description", "title", "$schema", "$defs", "$comment", "default",
                          "examples", "deprecated", "readOnly", "writeOnly"})
_OBJECT = frozenset({"properties", "additionalProperties", "propertyNames", "required",
                     "minProperties", "maxProperties"})


class _Unsupported(Exception):
    pass


def compile_schema(schema: Mapping[str, Any]) -> Check | None:
    """A function telling whether an instance is valid, or None if the schema is beyond it."""
    try:
        return _Compiler(schema).compile(schema, root=True)
    except (_Unsupported, re.error, TypeError, ValueError, KeyError):
        return None


def _always(instance: Any) -> bool:
    return True


def _never(instance: Any) -> bool:
    return False


def _is_number(x: Any) -> bool:
    return isinstance(x, numbers.Number) and not isinstance(x, bool)


_TYPES: dict[str, Check] = {
    "object": lambda x: isinstance(x, dict),
    "array": lambda x: isinstance(x, list),
    "string": lambda x: isinstance(x, str),
    "boolean": lambda x: isinstance(x, bool),
    "null": lambda x: x is None,
    "number": _is_number,
    "integer": lambda x: (isinstance(x, int) and not isinstance(x, bool))
    or (isinstance(x, float) and x.is_integer()),
}


def _equal_scalar(value: Any) -> Check:
    """jsonschema's `equal` against one scalar: True is not 1, 1.0 is 1."""
    if isinstance(value, str):
        return lambda x: isinstance(x, str) and x == value
    if isinstance(value, bool) or value is None:
        return lambda x: x is value
    if isinstance(value, (int, float)):
        return lambda x: isinstance(x, (int, float)) and not isinstance(x, bool) and x == value
    raise _Unsupported(f"enum or const of {type(value).__name__}")


def _all(checks: list[Check]) -> Check:
    if not checks:
        return _always
    if len(checks) == 1:
        return checks[0]

    def check(x: Any) -> bool:
        for one in checks:
            if not one(x):
                return False
        return True

    return check


class _Compiler:
    def __init__(self, root: Mapping[str, Any]) -> None:
        self.root = root
        self.refs: dict[str, Check] = {}

    def compile(self, schema: Any, root: bool = False) -> Check:
        if schema is True:
            return _always
        if schema is False:
            return _never
        if not isinstance(schema, dict):
            raise _Unsupported("a schema that is not an object")
        checks: list[Check] = []
        if _OBJECT & schema.keys():
            checks.append(self.object(schema))
        for keyword, value in schema.items():
            if keyword in _ANNOTATIONS or keyword in _OBJECT or (keyword == "$id" and root):
                continue
            checks.append(self.keyword(keyword, value))
        return _all(checks)

    def keyword(self, keyword: str, value: Any) -> Check:
        if keyword == "type":
            names = value if isinstance(value, list) else [value]
            tests = [_TYPES[name] for name in names]
            return tests[0] if len(tests) == 1 else (lambda x: any(t(x) for t in tests))
        if keyword == "enum":
            if all(isinstance(v, str) for v in value):
                allowed = frozenset(value)
                return lambda x: isinstance(x, str) and x in allowed
            tests = [_equal_scalar(v) for v in value]
            return lambda x: any(t(x) for t in tests)
        if keyword == "const":
            return _equal_scalar(value)
        if keyword == "$ref":
            return self.ref(value)
        if keyword in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"):
            if not _is_number(value):
                raise _Unsupported(keyword)
            bound = value
            if keyword == "minimum":
                return lambda x: not _is_number(x) or not x < bound
            if keyword == "maximum":
                return lambda x: not _is_number(x) or not x > bound
            if keyword == "exclusiveMinimum":
                return lambda x: not _is_number(x) or not x <= bound
            return lambda x: not _is_number(x) or not x >= bound
        if keyword == "pattern":
            search = re.compile(value).search
            return lambda x: not isinstance(x, str) or search(x) is not None
        if keyword in ("minLength", "maxLength", "minItems", "maxItems"):
            kind = str if keyword.endswith("Length") else list
            limit = int(value)
            if keyword.startswith("min"):
                return lambda x: not isinstance(x, kind) or len(x) >= limit
            return lambda x: not isinstance(x, kind) or len(x) <= limit
        if keyword == "items":
            item = self.compile(value)
            return lambda x: not isinstance(x, list) or all(item(v) for v in x)
        raise _Unsupported(keyword)

    def object(self, schema: dict[str, Any]) -> Check:
        properties = {str(k): self.compile(v) for k, v in schema.get("properties", {}).items()}
        extra = self.compile(schema.get("additionalProperties", True))
        names = self.compile(schema.get("propertyNames", True))
        required = tuple(schema.get("required", ()))
        low, high = int(schema.get("minProperties", 0)), schema.get("maxProperties")
        if high is not None:
            high = int(high)
        extra_ok = extra is _always
        names_ok = names is _always

        def check(x: Any) -> bool:
            if not isinstance(x, dict):
                return True
            if len(x) < low or (high is not None and len(x) > high):
                return False
            for key in required:
                if key not in x:
                    return False
            for key, value in x.items():
                test = properties.get(key)
                if test is not None:
                    if not test(value):
                        return False
                elif not extra_ok and not extra(value):
                    return False
                if not names_ok and not names(key):
                    return False
            return True

        return check

    def ref(self, ref: Any) -> Check:
        if not isinstance(ref, str) or not ref.startswith("#"):
            raise _Unsupported("a $ref outside the schema")
        known = self.refs.get(ref)
        if known is not None:
            return known
        cell: list[Check] = []
        self.refs[ref] = lambda x: cell[0](x)  # a recursive $ref sees this until compiled
        target: Any = self.root
        for part in ref[1:].split("/")[1:]:
            part = part.replace("~1", "/").replace("~0", "~")
            target = target[int(part)] if isinstance(target, list) else target[part]
        cell.append(self.compile(target))
        self.refs[ref] = cell[0]
        return cell[0]
