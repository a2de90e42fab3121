"""The scene graph: cycles, order, upstream closure and the three output formats. Table-driven."""

from __future__ import annotations

from pathlib import Path

import pytest

from cli_runner import run_main

from sparkspec import graph

Up = dict[str, str | None]

# -- cycles -------------------------------------------------------------------------------------


@pytest.mark.parametrize("upstreams, cycles", [
    ({}, []),
    ({"a": None, "b": "a", "c": "b"}, []),
    ({"a": "a"}, [["a"]]),
    ({"a": "b", "b": "a"}, [["a", "b"]]),
    ({"b": "a", "a": "b"}, [["b", "a"]]),  # named from the first scene in spec order
    ({"x": None, "c": "a", "a": "b", "b": "c"}, [["c", "a", "b"]]),
    ({"a": "b", "b": "c", "c": "a", "d": "a", "e": "e", "f": None}, [["a", "b", "c"], ["e"]]),
    ({"tail": "a", "a": "b", "b": "a"}, [["a", "b"]]),  # a scene leading into a loop is not in it
    ({"a": "missing"}, []),  # a dangling reference is reported elsewhere
])
def test_find_cycles(upstreams: Up, cycles: list[list[str]]) -> None:
    assert graph.find_cycles(upstreams) == cycles


# -- order --------------------------------------------------------------------------------------


@pytest.mark.parametrize("upstreams, order", [
    ({}, []),
    ({"a": None, "b": None}, ["a", "b"]),
    ({"c": "b", "b": "a", "a": None}, ["a", "b", "c"]),
    ({"pour": "intro", "logo": None, "intro": None}, ["intro", "pour", "logo"]),
    ({"a": None, "d": "c", "b": "a", "c": "b", "e": None}, ["a", "b", "c", "d", "e"]),
    ({"x": "gone"}, ["x"]),
])
def test_topological_order(upstreams: Up, order: list[str]) -> None:
    assert graph.topological_order(upstreams) == order


def test_topological_order_puts_every_upstream_first() -> None:
    # A deep chain given backwards, with branches.
    upstreams: Up = {f"s{i}": (f"s{i - 1}" if i else None) for i in range(200)}
    upstreams = dict(reversed(list(upstreams.items())))
    upstreams |= {f"b{i}": f"s{i * 7}" for i in range(20)}
    order = graph.topological_order(upstreams)
    assert sorted(order) == sorted(upstreams)
    position = {s: i for i, s in enumerate(order)}
    assert all(position[u] < position[s] for s, u in upstreams.items() if u)


# -- --target closure -------------------------------------------------------------------------

CHAINS: Up = {"intro": None, "pour": "intro", "steam": "pour", "close": "intro", "logo": None}


@pytest.mark.parametrize("targets, needed", [
    ([], set()),
    (["intro"], {"intro"}),
    (["steam"], {"steam", "pour", "intro"}),
    (["close", "logo"], {"close", "intro", "logo"}),
    (["steam", "pour"], {"steam", "pour", "intro"}),
])
def test_with_upstreams(targets: list[str], needed: set[str]) -> None:
    assert graph.with_upstreams(targets, CHAINS) == needed


def test_dependents() -> None:
    assert graph.dependents(CHAINS) == {"intro": ["pour", "close"], "pour": ["steam"], "steam": [],
                                        "close": [], "logo": []}


# -- output formats ------------------------------------------------------------------------------

SEQUENCES = {"final": ["intro", "pour", "logo", "intro"]}


def test_render_text() -> None:
    assert graph.render(CHAINS, SEQUENCES, "text") == "\n".join([
        "intro",
        "├─ pour",  # a child with a sibling after it
        "│  └─ steam",
        "└─ close",  # the last child
        "logo",
        "sequence final: intro + pour + logo + intro",
    ])


@pytest.mark.parametrize("fmt", ["text", "dot", "mermaid"])
def test_a_chain_thousands_deep_is_drawn(fmt: str) -> None:
    """The text tree was drawn by recursion: a 1,000-scene chain, a valid spec, was exit 3."""
    depth = 3000
    chain: Up = {f"s{n}": f"s{n - 1}" if n else None for n in range(depth)}
    drawn = graph.render(chain, {}, fmt)
    assert f"s{depth - 1}" in drawn
    if fmt == "text":
        assert drawn.splitlines()[-1].endswith(f"└─ s{depth - 1}")


def test_render_dot() -> None:
    assert graph.render(CHAINS, SEQUENCES, "dot") == "\n".join([
        "digraph sparkspec {",
        "  rankdir=LR;",
        '  "intro";',
        '  "pour";',
        '  "steam";',
        '  "close";',
        '  "logo";',
        '  "intro" -> "pour";',
        '  "pour" -> "steam";',
        '  "intro" -> "close";',
        '  "seq:final" [shape=box, label="final"];',
        '  "intro" -> "seq:final" [style=dashed];',
        '  "pour" -> "seq:final" [style=dashed];',
        '  "logo" -> "seq:final" [style=dashed];',
        "}",
    ])


def test_render_mermaid() -> None:
    assert graph.render(CHAINS, SEQUENCES, "mermaid") == "\n".join([
        "graph LR",
        '  s0["intro"]',
        '  s1["pour"]',
        '  s2["steam"]',
        '  s3["close"]',
        '  s4["logo"]',
        "  s0 --> s1",
        "  s1 --> s2",
        "  s0 --> s3",
        '  q0[["final"]]',
        "  s0 -.-> q0",
        "  s1 -.-> q0",
        "  s4 -.-> q0",
    ])


# -- through the CLI ----------------------------------------------------------------------------

SPEC = """\
version: 1
scenes:
  pour:
    first_frame: {scene: intro}
    prompt: "Coffee pours"
  intro:
    prompt: "A cup"
  flavor:
    matrix: {taste: [Vanilla Bean, caramel]}
    first_frame: {scene: pour}
    prompt: "A {{ taste }} latte"
sequences:
  final: {scenes: [intro, pour, flavor-caramel]}
"""


def _run(args: list[str], cwd: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[int, str]:
    code, out, err = run_main(args, cwd, monkeypatch)
    return code, out + err


def test_graph_command(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "project.spark.yaml").write_text(SPEC)
    code, text = _run(["graph"], tmp_path, monkeypatch)
    assert code == 0
    assert text.splitlines() == ["intro", "└─ pour", "   ├─ flavor-vanilla-bean", "   └─ flavor-caramel",
                                 "sequence final: intro + pour + flavor-caramel"]
    code, dot = _run(["graph", "--format", "dot"], tmp_path, monkeypatch)
    assert code == 0 and '  "pour" -> "flavor-vanilla-bean";' in dot.splitlines()
    code, mermaid = _run(["graph", "--format", "mermaid"], tmp_path, monkeypatch)
    assert code == 0 and mermaid.startswith("graph LR\n")
    assert not (tmp_path / ".sparkspec").exists()


def test_graph_command_refuses_a_cycle(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "project.spark.yaml").write_text(SPEC.replace("    prompt: \"A cup\"",
                                                              "    prompt: \"A cup\"\n"
                                                              "    first_frame: {scene: pour}"))
    code, text = _run(["graph"], tmp_path, monkeypatch)
    assert code == 1
    assert text.strip() == ("project.spark.yaml:3:3: error: scenes.pour: first_frame cycle: "
                            "pour -> intro -> pour; a scene cannot start from its own last frame")
