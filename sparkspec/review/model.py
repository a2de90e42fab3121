"""What the review page shows, gathered from the lock (what was rendered) and the project
(the graph, descriptions): plain values, so the page and the contact sheet only lay them out.

Paths in here are relative to the output folder, where index.html sits.
"""

from __future__ import annotations

import posixpath

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sparkspec import apifacts, graph
from sparkspec.config.model import Project
from sparkspec.state.lockfile import Lock, SceneRecord

# Parameters shown on a card, in this order, read from the key's inputs (what was rendered).
PARAMETERS = ("provider", "model", "resolution", "ratio", "duration", "frames", "camera_fixed", "watermark")


@dataclass(frozen=True)
class Take:
    number: int
    video: str
    poster: str
    seed: int
    key: str
    task_id: str
    tokens: int
    cost: float | None


@dataclass(frozen=True)
class ReviewScene:
    id: str
    prompt: str
    description: str | None
    parameters: tuple[tuple[str, str], ...]
    takes: tuple[Take, ...]
    pick: int
    seconds: float
    aspect: str  # CSS aspect-ratio of its videos
    upstream: str | None
    downstream: tuple[str, ...]
    before: str | None  # the previous render, for a scene the last apply changed
    changed: bool  # changed in the last apply (even when its previous render is gone)
    # Why the last apply did not render the picked take (it failed, or its upstream did): what
    # the page shows for it is the render from before, which no longer matches the spec.
    not_rendered: str | None = None
    new_takes: frozenset[int] = frozenset()  # takes the last apply rendered (or installed) anew
    new: bool = False  # the scene is new in the last apply

    @property
    def picked(self) -> Take:
        return next((t for t in self.takes if t.number == self.pick), self.takes[0])

    @property
    def tokens(self) -> int:
        return sum(t.tokens for t in self.takes)

    @property
    def cost(self) -> float | None:
        costs = [t.cost for t in self.takes if t.cost is not None]
        return sum(costs) if costs else None


@dataclass(frozen=True)
class ReviewSequence:
    id: str
    video: str
    members: tuple[tuple[str, float], ...]  # (scene id, seconds) in order
    stale: bool = False  # the film holds other clips than the spec's members now (not stitched since)


@dataclass(frozen=True)
class Review:
    title: str
    scenes: tuple[ReviewScene, ...]
    sequences: tuple[ReviewSequence, ...]


def take_records(record: SceneRecord) -> tuple[list[tuple[int, SceneRecord]], int]:
    """Every recorded take by number, and the pick. A lock without takes is one take 1."""
    return sorted(record.take_records().items()), record.pick


def relative(path: str, output_dir: str) -> str:
    """A project-relative path as seen from the output folder (where index.html is), which
    may be the project folder itself (`output_dir: .`)."""
    base = posixpath.normpath(output_dir.strip("/") or ".")
    if base == ".":
        return path
    if path.startswith(base + "/"):
        return path[len(base) + 1:]
    return "../" * len(base.split("/")) + path


def seconds(inputs: Mapping[str, Any]) -> float:
    frames = inputs.get("frames")
    if isinstance(frames, int):
        return frames / apifacts.FPS
    # The API renders 24 frames a second plus one: a 2 s clip lasts 49 / 24 s, and the members
    # of a stitched film start where those frames put them.
    duration = inputs.get("duration")
    whole = duration if isinstance(duration, int) and not isinstance(duration, bool) and duration > 0 else None
    return apifacts.frame_count(whole, None) / apifacts.FPS


def aspect(inputs: Mapping[str, Any]) -> str:
    """width / height of the API's frame for the resolution and ratio (16 / 9 when unknown)."""
    try:
        width, height = apifacts.pixel_size(str(inputs["resolution"]), str(inputs["ratio"]))
    except (KeyError, ValueError):
        return "16 / 9"
    return f"{width} / {height}"


def _show(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _cost(record: SceneRecord, price: float | None, service_tier: str | None) -> float | None:
    """What the render cost: as the API reported it, else its tokens at the spec's price (half
    for the scene's `flex` tier, as the plan counts it)."""
    if record.cost is not None:
        return record.cost
    return apifacts.tokens_cost(record.tokens, price, service_tier) if price is not None else None


def scene_order(project: Project, lock: Lock) -> list[str]:
    """The lock's scenes in graph order (then the ones the spec no longer has, by id): the
    order of the page's cards and of the contact sheet."""
    order = [sid for sid in graph.topological_order({sid: s.upstream for sid, s in project.scenes.items()})
             if sid in lock.scenes]
    return order + sorted(set(lock.scenes) - set(order))


def picked_render(sid: str, pick: int) -> str:
    """The picked take's name in an apply's results: the scene's id for take 1, `id.takeK` else."""
    return sid if pick == 1 else f"{sid}.take{pick}"


def gather(project: Project, lock: Lock, before: Mapping[str, str],
           changed: frozenset[str] = frozenset(), not_rendered: Mapping[str, str] | None = None,
           new_takes: Mapping[str, frozenset[int]] | None = None, new: frozenset[str] = frozenset()) -> Review:
    """The page's content. `before` maps a changed scene to its previous render's video
    (relative to the output folder); `changed` names every scene whose picked render the last
    apply changed; `not_rendered`: renders (`id`, `id.takeK`) the last apply failed or skipped,
    and why; `new_takes`: scene -> the takes the last apply rendered anew; `new`: its new scenes."""
    out = project.output_dir
    price = project.provider.price_per_million_tokens
    upstreams = {sid: s.upstream for sid, s in project.scenes.items()}
    order = scene_order(project, lock)
    downstream: dict[str, list[str]] = {}
    for sid in order:
        up = upstreams.get(sid)
        if up is not None:
            downstream.setdefault(up, []).append(sid)
    scenes = []
    for sid in order:
        record = lock.scenes[sid]
        spec = project.scenes.get(sid)
        inputs = record.inputs
        numbered, pick = take_records(record)
        # Each take's files where the lock has them (the picked one's are renders/<scene>.mp4).
        takes = tuple(Take(number, relative(t.video.path, out), relative(t.last_frame.path, out), t.seed,
                           t.key, t.task_id, t.tokens, _cost(t, price, spec.service_tier if spec else None))
                      for number, t in numbered)
        parameters = tuple((name, _show(inputs[name])) for name in PARAMETERS if inputs.get(name) is not None)
        why = (not_rendered or {}).get(picked_render(sid, pick))
        scenes.append(ReviewScene(
            id=sid, prompt=str(inputs.get("prompt", spec.prompt if spec else "")),
            description=spec.description if spec else None, parameters=parameters, takes=takes,
            pick=pick, seconds=seconds(inputs), aspect=aspect(inputs), upstream=upstreams.get(sid),
            downstream=tuple(downstream.get(sid, ())), before=None if why else before.get(sid),
            changed=not why and (sid in changed or sid in before), not_rendered=why,
            new_takes=(new_takes or {}).get(sid, frozenset()), new=sid in new))
    by_id = {s.id: s for s in scenes}
    sequences = []
    for name, seq in sorted(lock.sequences.items()):
        wanted = project.sequences[name].scenes if name in project.sequences else ()
        picked = [lock.scenes[m].video.sha256 if m in lock.scenes else None for m in wanted]
        if picked == list(seq.members):
            members = tuple((m, by_id[m].seconds if m in by_id else 0.0) for m in wanted)
        else:  # the film as it was stitched (a targeted apply left it), told by its clips' digests
            members = tuple(_clips(lock).get(sha, ("a clip no longer in the lock", 0.0)) for sha in seq.members)
        sequences.append(ReviewSequence(name, relative(seq.video.path, out), members,
                                        stale=picked != list(seq.members)))
    return Review(project.name, tuple(scenes), tuple(sequences))


def _clips(lock: Lock) -> dict[str, tuple[str, float]]:
    """Each recorded take's video digest -> its name (`intro`, `intro.take2`) and seconds."""
    found: dict[str, tuple[str, float]] = {}
    for sid, record in sorted(lock.scenes.items()):
        for number, take in sorted(record.take_records().items()):
            name = sid if number == record.pick else f"{sid}.take{number}"
            found.setdefault(take.video.sha256, (name, seconds(take.inputs)))
    return found
