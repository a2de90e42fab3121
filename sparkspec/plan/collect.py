"""Tasks earlier applies submitted and did not collect (the journal), as a plan sees them.

apply's runner collects a journalled task of the scene's key and provider instead of
submitting one (tasks.py `journalled`), expired or not (the API says whether it rendered),
and a damaged entry fails the scene. The plan says the same: `collect` at no new cost, or
the render with its cost and a reason, so what it shows and what apply does agree.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace

from sparkspec.plan.model import Action, Change
from sparkspec.state.journal import DamagedEntry, Journal, JournalEntry

QUERYABLE_FOR = 7 * 86400  # seconds the API answers about a task (reference section 6)


@dataclass(frozen=True)
class Tasks:
    """The journal of tasks earlier applies submitted and did not collect, at `now`."""

    journal: Journal
    now: float
    listed: frozenset[str] | None = None  # the keys journalled (one listing for a plan); None: ask
    unconfirmed: frozenset[str] | None = None  # keys whose create went unanswered; None: ask
    rerolls: Mapping[str, str] = field(default_factory=dict)  # key -> task id of a re-roll not yet in the lock

    @classmethod
    def listing(cls, journal: Journal, now: float) -> Tasks:
        from sparkspec.state import rerolls

        entries, unconfirmed = journal.listing()
        # A damaged record naming no readable key may be any key's: every key asks (and is told).
        return cls(journal, now, None if journal.keyless_damage() else frozenset(entries), frozenset(unconfirmed),
                   rerolls.read(journal.directory.parent))

    def lost_create(self, key: str) -> float | None:
        """When an earlier apply's create of `key` went unanswered (see Journal.mark_unconfirmed)."""
        if self.unconfirmed is not None and key not in self.unconfirmed:
            return None
        at = self.journal.unconfirmed(key)
        return 0.0 if at is None and self.unconfirmed is not None else at  # 0.0: in a killed apply's log

    def entry(self, key: str, provider: str | None = None) -> JournalEntry | None:
        """DamagedEntry when the key's entry cannot be read (or is another provider's)."""
        if self.listed is not None and key not in self.listed:
            return None
        return self.journal.get(key, provider)


def journalled(change: Change, tasks: Tasks | None, provider: str) -> Change:
    """A render as apply's runner will carry it out given the journal: a task of this key and
    provider is collected, at no new cost, even past its expiry (it may have finished, paid for,
    before it expired: the API says); a damaged entry fails the scene (its task may exist).
    --replace collects such a task too (an interrupted `--replace` paid for the new render it
    asked for, which nobody has seen yet), unless an apply found the API does not know it:
    then, and for a damaged entry, it submits afresh."""
    if tasks is None or change.key is None or not change.action.renders:
        return change
    try:
        entry = tasks.entry(change.key, None if provider == "local" else provider)
    except DamagedEntry as exc:
        if change.action is Action.REPLACE:  # --replace drops the entry and submits afresh
            return change
        if provider == "local":  # nothing paid: apply drops the entry and renders
            return replace(change, reasons=change.reasons + (f"{exc}: dropped, and rendered again",))
        return replace(change, reasons=change.reasons + (
            f"{exc}: apply fails this scene, as a task may already exist for it; look at the file and delete "
            f"it, or run `sparkspec apply --replace {change.id}` to render it afresh",))
    if provider == "local":  # its tasks are found by key, not collected: a journal entry is an old version's
        return change
    if entry is None:
        lost = tasks.lost_create(change.key)
        if lost is not None:
            when = time.strftime("%Y-%m-%d %H:%M", time.localtime(lost)) if lost else "an earlier apply"
            return replace(change, reasons=change.reasons + (
                f"a create of this render got no readable answer ({when}): the API may have made a task, "
                "paid for, that sparkspec cannot name; applying submits a new one (look in the provider's "
                "console first)",))
        return change
    if change.action is Action.REPLACE and entry.unknown_at is not None:
        return replace(change, reasons=change.reasons + (
            f"task {entry.task_id} of an earlier apply is unknown to the API: not collected, a new one is submitted",))
    old = ""
    if tasks.now - entry.submitted_at > QUERYABLE_FOR:
        old = (f" (it is older than the {QUERYABLE_FOR // 86400} days the API answers about tasks: if it is "
               f"unknown there, the scene fails, and `sparkspec apply --replace {change.id}` renders it afresh)")
    # Paid by that apply: nothing to pay now, unless the task did not render (003021099, expired)
    # and is submitted again, which apply checks against the budget with this estimate.
    return replace(change, action=Action.COLLECT, estimated_tokens=0, estimated_cost=None,
                   unplanned_tokens=change.estimated_tokens, unplanned_cost=change.estimated_cost,
                   reasons=change.reasons + (
        f"task {entry.task_id} of an earlier apply is in the journal: collected at no new cost{old}",))


def uncollected(changes: Iterable[Change], tasks: Tasks | None, provider: str, whole: bool = True) -> list[str]:
    """Tasks the journal holds for renders that are in place (an apply --replace interrupted
    after its create): paid for, and collected by `--replace`, not by a plain apply (which
    would install a re-roll nobody asked it for, and re-render what is chained after it); and,
    for a `whole` plan (not --target), tasks of keys no scene wants any more."""
    if tasks is None or provider == "local":
        return []
    changes = list(changes)
    several = {c.id for c in changes if c.kind == "scene" and c.take != 1}  # scenes of more than one take
    notes = []
    for change in changes:
        if change.kind != "scene" or change.action is not Action.NOOP or change.key is None:
            continue
        try:
            entry = tasks.entry(change.key, provider)
        except DamagedEntry:
            continue
        if entry is not None and entry.unknown_at is None:
            # `--replace hero` would render every take: name the one this task is of.
            named = f"{change.id}.take{change.take}" if change.id in several else change.render
            notes.append(f"task {entry.task_id} of {named} (submitted by an apply that was stopped, "
                         f"paid for) is in the journal: `sparkspec apply --replace {named}` collects it "
                         "at no new cost")
    return notes + (_unwanted(changes, tasks, provider) if whole else [])


def _unwanted(changes: list[Change], tasks: Tasks, provider: str) -> list[str]:
    """Tasks the journal holds for keys no scene of a whole plan wants now (the spec changed
    after an apply that submitted them was stopped): paid for, collected if the spec goes back."""
    if tasks.listed is None or any(c.kind == "scene" and c.key is None and c.action is not Action.DELETE
                                   for c in changes):
        return []  # a damaged journal (every key asks), or keys known only after apply: not judged
    wanted = {c.key for c in changes if c.key is not None}
    notes = []
    for key in sorted(tasks.listed - wanted):
        try:
            entry = tasks.entry(key, provider)
        except DamagedEntry:
            continue
        if entry is not None:
            notes.append(f"task {entry.task_id} ({entry.scene}, a render the spec no longer asks for, paid for) is "
                         "in the journal: putting the spec back as it was collects it at no new cost")
    return notes


def taken_over(change: Change, who: str, task: JournalEntry | None, tasks: Tasks | None) -> Change:
    """A render whose key a crashed apply on this machine (`who`) claimed on the team's remote:
    apply takes the claim over at once and collects the task it names, at no new cost, unless
    that task is another provider's (then it renders, at its cost)."""
    provider = change.scene_key.inputs.get("provider") if change.scene_key is not None else None
    note = f"a claim left on the team's remote by a crashed apply on this machine ({who}) is taken over"
    if task is None or tasks is None or task.provider != provider:
        return replace(change, reasons=change.reasons + (note,))
    # Paid by that apply: nothing to pay now, unless the task did not render (003021099, expired)
    # and is submitted again, which apply checks against the budget with this estimate.
    return replace(change, action=Action.COLLECT, estimated_tokens=0, estimated_cost=None,
                   unplanned_tokens=change.estimated_tokens, unplanned_cost=change.estimated_cost,
                   reasons=change.reasons + (
        f"{note}: its task {task.task_id} is collected at no new cost",))
