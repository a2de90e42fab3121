"""What a plan is: its changes, their actions and the options it was made with. Values only;
`sparkspec.plan.planner` makes them."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from sparkspec.keys import SceneKey
    from sparkspec.state.cache import CachedRender
    from sparkspec.state.journal import JournalEntry


class Action(enum.Enum):
    CREATE = "create"
    UPDATE = "update"
    REPLACE = "replace"
    REUSE = "reuse"
    RESTORE = "restore"
    DELETE = "delete"
    NOOP = "no-op"
    STITCH = "stitch"
    PULL = "pull"  # on the team's remote: downloaded, no tokens
    WAIT = "wait"  # another machine renders it now: apply waits for its entry
    COLLECT = "collect"  # its task, from an earlier apply, is in the journal: collected, no new cost

    @property
    def symbol(self) -> str:
        return _SYMBOLS[self]

    @property
    def renders(self) -> bool:
        return self in (Action.CREATE, Action.UPDATE, Action.REPLACE)


_SYMBOLS = {Action.CREATE: "+", Action.UPDATE: "~", Action.REPLACE: "-/+", Action.REUSE: "=",
            Action.RESTORE: "<", Action.DELETE: "-", Action.NOOP: " ", Action.STITCH: ">",
            Action.PULL: "<", Action.WAIT: "…", Action.COLLECT: "<"}


@dataclass(frozen=True)
class Change:
    kind: str  # "scene" or "sequence"
    id: str
    action: Action
    reasons: tuple[str, ...] = ()
    key: str | None = None  # None: known only after apply (or a delete)
    estimated_tokens: int = 0
    estimated_cost: float | None = None
    same_as: str | None = None  # reuse: the scene whose render in this apply it shares
    scene_key: SceneKey | None = field(default=None, compare=False, repr=False)  # what `key` was made of
    take: int = 1  # which of the scene's takes; take 1 is the scene itself
    # A wait or a collect: what rendering it here would cost (when the other machine's claim ends
    # without its render; when the task collected did not render and is submitted again), which
    # the plan's estimate does not count; apply checks it against the budget.
    unplanned_tokens: int = field(default=0, compare=False)
    unplanned_cost: float | None = field(default=None, compare=False)
    # A restore whose video is in place and whose last frame is lost everywhere: apply decodes
    # the frame from the video again (its bytes, and the keys of scenes chained after it, are
    # known after apply).
    frame_from_video: bool = False
    # The rendered prompt before and after, when it changed (the markdown shows both whole).
    prompts: tuple[str, str] | None = field(default=None, compare=False, repr=False)

    @property
    def address(self) -> str:
        return f"{self.kind}.{self.id}" + (f".take{self.take}" if self.take != 1 else "")

    @property
    def render(self) -> str:
        """What `same_as` names: the scene's id, `id.takeK` for its other takes."""
        return self.address.split(".", 1)[1]


class RemoteView(Protocol):
    """What the team's remote holds, as far as this plan asked (sparkspec.remote.planning)."""

    def entry(self, key: str) -> CachedRender | None: ...

    def claim(self, key: str) -> str | None:
        """`rendering on <user>@<host>, task <id>` when another machine renders `key` now."""

    def abandoned(self, key: str) -> tuple[str, JournalEntry | None] | None:
        """A claim on `key` left by a crashed apply on this machine: who held it (`user@host,
        pid N`) and the task it names, as the journal would hold it."""


@dataclass(frozen=True)
class PlanOptions:
    targets: tuple[str, ...] = ()
    replace: tuple[str, ...] = ()
    # (flag, kind, id) for each id given as an address (`scene.intro`): its kind is checked
    # against the spec. Not part of what a saved plan was made with: the ids are.
    addressed: tuple[tuple[str, str, str], ...] = field(default=(), compare=False)

    def replaces(self, scene_id: str, take: int) -> bool:
        """--replace names the scene (every take) or this take of it (`hero.take2`)."""
        return scene_id in self.replace or f"{scene_id}.take{take}" in self.replace


@dataclass(frozen=True)
class Plan:
    changes: tuple[Change, ...]
    options: PlanOptions = PlanOptions()
    fingerprint: Mapping[str, str] = field(default_factory=dict)
    priced: bool = False  # the provider has price_per_million_tokens: nothing to render costs 0.00, not "unknown"

    def scene(self, scene_id: str, take: int = 1) -> Change | None:
        return next((c for c in self.changes if c.kind == "scene" and c.id == scene_id and c.take == take), None)

    def count(self, *actions: Action) -> int:
        return sum(1 for c in self.changes if c.action in actions)

    @property
    def has_changes(self) -> bool:
        return any(c.action is not Action.NOOP for c in self.changes)

    @property
    def estimated_tokens(self) -> int:
        return sum(c.estimated_tokens for c in self.changes)

    @property
    def estimated_cost(self) -> float | None:
        costs = [c.estimated_cost for c in self.changes if c.estimated_cost is not None]
        return sum(costs) if costs else (0.0 if self.priced else None)
