"""The scene graph: a scene may start from one upstream scene's last frame.

Each scene has at most one upstream, so the graph is a forest whose edges point
from a scene to the scene it starts from; cycles are loops of those pointers.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

Upstreams = Mapping[str, str | None]  # scene -> the scene it starts from


def find_cycles(upstreams: Upstreams) -> list[list[str]]:
    """Each cycle once, as the scenes along it starting from its first in spec order."""
    state: dict[str, int] = {}  # 1 on the current walk, 2 finished
    cycles: list[list[str]] = []
    for start in upstreams:
        walk: list[str] = []
        node: str | None = start
        while node is not None and node in upstreams and state.get(node) is None:
            state[node] = 1
            walk.append(node)
            node = upstreams[node]
        if node is not None and state.get(node) == 1:
            loop = walk[walk.index(node):]
            first = min(loop, key=list(upstreams).index)
            at = loop.index(first)
            cycles.append(loop[at:] + loop[:at])
        for visited in walk:
            state[visited] = 2
    return cycles


def topological_order(upstreams: Upstreams) -> list[str]:
    """Scenes with every upstream before its dependents, otherwise in spec order."""
    order: list[str] = []
    placed: set[str] = set()
    for start in upstreams:
        chain: list[str] = []
        node: str | None = start
        while node is not None and node not in placed and node in upstreams:
            chain.append(node)
            node = upstreams[node]
        for scene in reversed(chain):
            placed.add(scene)
            order.append(scene)
    return order


def with_upstreams(targets: Iterable[str], upstreams: Upstreams) -> set[str]:
    """The targets and everything they need upstream."""
    needed: set[str] = set()
    for target in targets:
        node: str | None = target
        while node is not None and node not in needed:
            needed.add(node)
            node = upstreams.get(node)
    return needed


def dependents(upstreams: Upstreams) -> dict[str, list[str]]:
    children: dict[str, list[str]] = {scene: [] for scene in upstreams}
    for scene, parent in upstreams.items():
        if parent is not None and parent in children:
            children[parent].append(scene)
    return children


def render(upstreams: Upstreams, sequences: Mapping[str, Iterable[str]], fmt: str) -> str:
    order = topological_order(upstreams)
    if fmt == "dot":
        lines = ["digraph sparkspec {", "  rankdir=LR;"]
        lines += [f'  "{s}";' for s in order]
        lines += [f'  "{upstreams[s]}" -> "{s}";' for s in order if upstreams[s]]
        for name, members in sequences.items():
            lines.append(f'  "seq:{name}" [shape=box, label="{name}"];')
            lines += [f'  "{m}" -> "seq:{name}" [style=dashed];' for m in dict.fromkeys(members)]
        lines.append("}")
        return "\n".join(lines)
    if fmt == "mermaid":
        lines = ["graph LR"]
        ids = {s: f"s{i}" for i, s in enumerate(order)}
        lines += [f'  {ids[s]}["{s}"]' for s in order]
        lines += [f"  {ids[upstreams[s]]} --> {ids[s]}" for s in order if upstreams[s]]  # type: ignore[index]
        for i, (name, members) in enumerate(sequences.items()):
            lines.append(f'  q{i}[["{name}"]]')
            lines += [f"  {ids[m]} -.-> q{i}" for m in dict.fromkeys(members) if m in ids]
        return "\n".join(lines)
    children = dependents(upstreams)
    lines = []

    def walk(root: str) -> None:
        """A tree as `tree` draws one: ├─ for a child with siblings after it, └─ for the last.
        With a stack, not recursion: a chain thousands of scenes deep is a valid spec."""
        stack = [(root, "", "")]
        while stack:
            scene, prefix, branch = stack.pop()
            lines.append(prefix + branch + scene)
            below = prefix + ("" if not branch else "│  " if branch == "├─ " else "   ")
            kids = children[scene]
            stack.extend((child, below, "└─ " if n == len(kids) - 1 else "├─ ")
                         for n, child in reversed(list(enumerate(kids))))

    for scene in order:
        if upstreams[scene] is None:
            walk(scene)
    for name, members in sequences.items():
        lines.append(f"sequence {name}: {' + '.join(members)}")
    return "\n".join(lines)
