"""YAML with a position for every node.

PyYAML's C composer builds the node tree quickly; this module turns it into
plain Python values itself, so that it can refuse what a spec must not hold
(duplicate keys, non-standard tags, alias bombs) with a position for each, and
so that any key path can be mapped back to its line and column afterwards.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import yaml

try:
    from yaml import CSafeLoader as _Loader
except ImportError:  # pragma: no cover - PyYAML built without libyaml
    from yaml import SafeLoader as _Loader  # type: ignore[assignment]

from sparkspec.diagnostics import Diagnostic, Severity, conflict_marker_line

Path = tuple[str | int, ...]

_STR = "tag:yaml.org,2002:str"
_INT = "tag:yaml.org,2002:int"
_FLOAT = "tag:yaml.org,2002:float"
_BOOL = "tag:yaml.org,2002:bool"
_NULL = "tag:yaml.org,2002:null"
_MAP = "tag:yaml.org,2002:map"
_SEQ = "tag:yaml.org,2002:seq"
_MERGE = "tag:yaml.org,2002:merge"
_SCALAR_TAGS = {_STR, _INT, _FLOAT, _BOOL, _NULL}
_TIMESTAMP = "tag:yaml.org,2002:timestamp"

# Alias expansion may visit a node many times; a legitimate spec reuses a few
# anchors, a "billion laughs" document multiplies them without bound.
_EXPANSION_FACTOR = 20
_EXPANSION_SLACK = 10_000
_MAX_DEPTH = 100

_scalar_constructor = yaml.SafeLoader("")


@dataclass
class Document:
    """A parsed YAML file: its data and the node tree to find positions in."""

    file: str
    data: Any
    root: yaml.Node | None
    diagnostics: list[Diagnostic] = field(default_factory=list)
    # The source text of plain scalars that YAML 1.1 read as something else (`no` is False,
    # `1e3` is 1000.0), by path: where the schema wants a string, the user meant the text.
    plain_text: dict[Path, str] = field(default_factory=dict)
    # The text has an escape that makes a NUL character ("\\0", "\\x00", ...): the loader then
    # looks for it in every string (a file name with one in it failed deep inside the system).
    escapes_nul: bool = False

    def diagnostic(self, path: Path, message: str, *, at_key: bool = False,
                   severity: Severity = "error") -> Diagnostic:
        """A problem with the value at `path` (or its key), where it stands in this file."""
        line, col = self.position(path, at_key=at_key)
        return Diagnostic(self.file, line, col, severity, dotted(path), message)

    def position(self, path: Path, *, at_key: bool = False) -> tuple[int, int]:
        """1-based (line, column) of the value at `path`, or of its key."""
        node = self.root
        key_node: yaml.Node | None = None
        best = (1, 1)
        for part in path:
            if node is None:
                break
            best = _mark(node)
            if isinstance(node, yaml.MappingNode):
                found = _lookup(node, part)
                if found is None:
                    return best
                key_node, node = found
            elif isinstance(node, yaml.SequenceNode) and isinstance(part, int):
                if not 0 <= part < len(node.value):
                    return best
                key_node, node = None, node.value[part]
            else:
                return best
        if node is None:
            return best
        if at_key and key_node is not None:
            return _mark(key_node)
        return _mark(node)


def _mark(node: yaml.Node) -> tuple[int, int]:
    return node.start_mark.line + 1, node.start_mark.column + 1


def _lookup(node: yaml.MappingNode, key: str | int) -> tuple[yaml.Node, yaml.Node] | None:
    # As the builder does: the first explicit key wins (a duplicate is an error), then merges.
    merged = None
    for key_node, value_node in node.value:
        if key_node.tag == _MERGE:
            sources = value_node.value if isinstance(value_node, yaml.SequenceNode) else [value_node]
            for source in sources:
                if isinstance(source, yaml.MappingNode) and merged is None:
                    merged = _lookup(source, key)
        elif isinstance(key_node, yaml.ScalarNode) and str(key_node.value) == str(key):
            return key_node, value_node
    return merged


_NUL_ESCAPE = re.compile(r"\\(?:0|x00|u0000|U00000000)")


_UNCLOSED = (("quoted scalar", "a quoted string"), ("flow mapping", "a { } mapping"),
             ("flow sequence", "a [ ] list"))


def load_yaml(text: str, file: str) -> Document:
    """Parse `text`; problems become diagnostics on the returned document."""
    try:
        root = yaml.compose(text, Loader=_Loader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        said = exc.problem or exc.context or "invalid YAML"
        if exc.problem and exc.context:  # "expected a single document in the stream" / "but found another"
            said = f"{exc.context}, {exc.problem}"
        ended = exc.problem_mark is not None and exc.problem_mark.index >= len(text.rstrip())
        opened = next((what for word, what in _UNCLOSED if word in (exc.context or "")), None)
        if ended and exc.context_mark is not None:
            # A quote, bracket or brace never closed: the parser notices at the end of the file;
            # where it opened is where the user must look.
            mark = exc.context_mark
            said = f"{opened or exc.context} that is never closed (the file ends first)"
        elif opened is not None and exc.context_mark is not None and exc.problem_mark is not None \
                and exc.problem_mark.line > exc.context_mark.line:
            # Not closed on its line, and what follows cannot be in it: point where it opened too.
            said = (f"{opened} opened at line {exc.context_mark.line + 1}, column {exc.context_mark.column + 1} "
                    f"is not closed: {exc.problem}")
        line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        problem = f"YAML syntax: {said}"
        if _char_at(text, line, col) == "\t":
            problem = "YAML syntax: a tab character; YAML indents with spaces only"
        conflict = conflict_marker_line(text)
        if conflict is not None:  # a merge left half done: say so, not what the parser tripped on
            line, col = conflict, 1
            problem = "the file has merge conflicts (git's <<<<<<< / ======= / >>>>>>> lines); keep one side of each and run again"
        diag = Diagnostic(file, line, col, "error", "", problem)
        return Document(file, None, None, [diag])
    except yaml.reader.ReaderError as exc:  # a character YAML does not allow (a NUL, a control code)
        at = min(max(exc.position, 0), len(text))
        line, col = text.count("\n", 0, at) + 1, at - text.rfind("\n", 0, at)
        code = exc.character if isinstance(exc.character, int) else ord(str(exc.character)[:1] or "\0")
        diag = Diagnostic(file, line, col, "error", "", f"YAML syntax: the character U+{code:04X} (a control "
                          "character) is not allowed in YAML; remove it")
        return Document(file, None, None, [diag])
    except yaml.YAMLError as exc:
        diag = Diagnostic(file, 1, 1, "error", "", f"YAML syntax: {exc}")
        return Document(file, None, None, [diag])
    doc = Document(file, None, root, escapes_nul=_NUL_ESCAPE.search(text) is not None)
    if root is None:
        return doc
    builder = _Builder(doc)
    try:
        doc.data = builder.build(root, ())
    except _AliasBomb as exc:
        where, at_key = _alias_site(root, exc.path)
        line, col = doc.position(where, at_key=at_key)
        doc.diagnostics.append(Diagnostic(
            file, line, col, "error", dotted(where),
            "YAML aliases expand too far (an alias bomb?); write the values out instead"))
        doc.data = None
    except _TooDeep as exc:
        where = exc.path[:2]
        line, col = doc.position(where)
        doc.diagnostics.append(Diagnostic(
            file, line, col, "error", dotted(where),
            f"nested more than {_MAX_DEPTH} levels deep; flatten it"))
        doc.data = None
    return doc


def _char_at(text: str, line: int, col: int) -> str:
    """The character at a 1-based position, or '' past the end."""
    lines = text.split("\n", line)
    if line > len(lines) or col > len(lines[line - 1]):
        return ""
    return lines[line - 1][col - 1]


def _alias_site(root: yaml.Node, path: Path) -> tuple[Path, bool]:
    """Where along `path` the first alias is written: the key it is the value of, or its list.

    An alias resolves to its anchored node, defined earlier in the text than
    the collection that refers to it.
    """
    node = root
    for i, part in enumerate(path):
        child: yaml.Node | None = None
        if isinstance(node, yaml.MappingNode):
            found = _lookup(node, part)
            child = found[1] if found else None
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            child = node.value[part]
        if child is None:
            break
        if child.start_mark.index < node.start_mark.index:
            return (path[: i + 1], True) if isinstance(part, str) else (path[:i], False)
        node = child
    return path, False


class _AliasBomb(Exception):
    def __init__(self, node: yaml.Node, path: Path) -> None:
        self.node = node
        self.path = path


class _TooDeep(Exception):
    def __init__(self, path: Path) -> None:
        self.path = path


class _Builder:
    def __init__(self, doc: Document) -> None:
        self.doc = doc
        self.visits = 0
        self.unique: set[int] = set()

    def _error(self, node: yaml.Node, path: Path, message: str) -> None:
        line, col = _mark(node)
        self.doc.diagnostics.append(
            Diagnostic(self.doc.file, line, col, "error", dotted(path), message))

    def build(self, node: yaml.Node, path: Path) -> Any:
        self.visits += 1
        self.unique.add(id(node))
        if self.visits > _EXPANSION_SLACK and self.visits > _EXPANSION_FACTOR * len(self.unique):
            raise _AliasBomb(node, path)
        if isinstance(node, yaml.ScalarNode):
            return self._scalar(node, path)
        if len(path) >= _MAX_DEPTH:  # libyaml allows 1000 levels; Python's stack does not
            raise _TooDeep(path)
        if isinstance(node, yaml.SequenceNode):
            if node.tag != _SEQ:
                self._error(node, path, f"tag {node.tag} is not allowed; remove it")
            return [self.build(item, path + (i,)) for i, item in enumerate(node.value)]
        assert isinstance(node, yaml.MappingNode)
        if node.tag != _MAP:
            self._error(node, path, f"tag {node.tag} is not allowed; remove it")
        result: dict[Any, Any] = {}
        merged: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE:
                self._merge(value_node, path, merged)
                continue
            if not isinstance(key_node, yaml.ScalarNode):
                self._error(key_node, path, "a key must be a plain scalar")
                continue
            self._scalar(key_node, path, key=True)  # reports a tag that does not fit
            # A key is a name, as written: YAML 1.1 would make the scene `no` the key False.
            key = key_node.value
            if key in result:
                self._error(key_node, path + (key,),
                            f"duplicate key {key!r}; each key may appear once in a mapping")
                continue
            result[key] = self.build(value_node, path + (key,))
        for key, value in merged.items():
            result.setdefault(key, value)
        return result

    def _merge(self, node: yaml.Node, path: Path, into: dict[Any, Any]) -> None:
        sources = node.value if isinstance(node, yaml.SequenceNode) else [node]
        for source in sources:
            if not isinstance(source, yaml.MappingNode):
                self._error(source, path, "a merge key (<<) takes a mapping or a list of mappings")
                continue
            for key, value in self.build(source, path).items():
                into.setdefault(key, value)

    def _scalar(self, node: yaml.ScalarNode, path: Path, *, key: bool = False) -> Any:
        tag = node.tag
        if tag == _STR:
            return node.value
        if not node.style and not key:  # plain: None from PyYAML, "" from libyaml
            self.doc.plain_text[path] = node.value
        if tag == _TIMESTAMP:
            # YAML 1.1 reads 2024-05-01 as a date; in a spec it is the text as written.
            return node.value
        if tag not in _SCALAR_TAGS:
            self._error(node, path, f"tag {tag} is not allowed; remove it")
            return node.value
        if tag == _INT and ":" in node.value:
            # YAML 1.1 reads 16:9 as base 60 (969); the user meant the text.
            return node.value
        if tag == _FLOAT and ":" in node.value:
            return node.value
        # The constructor function itself: construct_object would keep every node alive in
        # the shared constructor's cache, and poison it when an explicit tag does not fit.
        try:
            return _scalar_constructor.yaml_constructors[tag](_scalar_constructor, node)
        except (ValueError, LookupError, yaml.YAMLError):  # e.g. `!!int prompt`, `!!float ''`
            self._error(node, path, f"{node.value!r} is not a valid !!{tag.rsplit(':', 1)[-1]}; remove the tag")
            return node.value


_SIMPLE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")


def dotted(path: Path) -> str:
    """`scenes.pour.duration`, `sequences.final.scenes[1]`, `vars["a.b"]`."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        elif _SIMPLE_KEY.fullmatch(part):
            out += f".{part}" if out else part
        else:
            out += f"[{part!r}]"
    return out
