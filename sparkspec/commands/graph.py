"""`sparkspec graph`: the scene graph as text, Graphviz dot or Mermaid, from the spec alone."""

from __future__ import annotations

from collections.abc import Callable

from sparkspec.commands.validate import load_spec
from sparkspec.config.loader import LoadOptions
from sparkspec.graph import render


def graph_text(spec: str, options: LoadOptions, fmt: str, warn: Callable[[str], None]) -> str:
    project = load_spec(spec, options, warn)
    upstreams = {sid: s.upstream for sid, s in project.scenes.items()}
    return render(upstreams, {n: s.scenes for n, s in project.sequences.items()}, fmt)
