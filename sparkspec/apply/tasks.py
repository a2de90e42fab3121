"""One render's life: submit it (or collect it from the journal), wait for it, deliver it.

A task's id is in the journal before it is polled, so an apply killed at any point
collects it next time instead of paying for it twice. A render slot is held only while
the task renders remotely; downloads and checks happen after it is freed. A task the
API says did not render (003021099, expired) is submitted again with backoff, at most
twice per scene per apply, each time reported; a task the API does not know (404) is
never submitted again: it may exist and be paid for. A refused key stops all new
submissions. Failures come out as `SceneFailed`, and with --fail-fast they stop new
submissions too. Scenes with one key share one render (`obtain`).
"""

from __future__ import annotations

import asyncio
import dataclasses
import errno
import random
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sparkspec import apifacts
from sparkspec.apply.budget import BudgetMeter
from sparkspec.apply.fetch import FetchJob, Fetched, fetch_here
from sparkspec.state.journal import DamagedEntry, Journal, JournalEntry
from sparkspec.state.cache import Cache, CachedRender
from sparkspec.errors import (
    AccountError,
    AuthError,
    BadAnswer,
    CreateUnconfirmed,
    DiskError,
    DownloadError,
    MediaError,
    ProviderError,
    RenderFailed,
    TaskNotFound,
    TransientError,
    UnreadableCreate,
    UrlExpired,
)
from sparkspec.keys import SceneKey
from sparkspec.providers.base import Provider, RenderRequest, TaskState, TaskStatus
from sparkspec.config.model import PollConfig

if TYPE_CHECKING:
    from sparkspec.apply.workers import FetchWorkers
    from sparkspec.review.contact import Strip

Emit = Callable[[dict[str, Any]], None]
# (key, scene, the render) -> the render, or another machine's pulled instead
Around = Callable[[str, str, Callable[[], Awaitable["CachedRender"]]], Awaitable["CachedRender"]]
Sleep = Callable[[float], Awaitable[None]]

# What a task that did not render is submitted again for, and how it is reported.
RESUBMIT_CODES = {apifacts.UNAVAILABLE: "the service was busy (003021099)", "expired": "the task expired unrendered"}
MAX_RESUBMITS = 2  # per scene per apply
UNKNOWN_TASK_GRACE = 60.0  # seconds after a create during which a 404 means "not visible yet"
UNREADABLE_POLLS = 8  # answers in a row to a poll that are not the task's status before the scene fails
MAX_DOWNLOAD_ATTEMPTS = 4  # of a finished task's outputs: lapsed URLs refreshed, undecodable bodies fetched again
DEFAULT_EXPIRY = 172800
CLOCK_SKEW = 3600.0  # a created_at this far ahead of our clock is not unix seconds: count from our own


def stop_reason(exc: AuthError | AccountError) -> str:
    """Why no new task is submitted for the rest of the apply (running ones are still collected)."""
    if isinstance(exc, AuthError):
        return f"the API refused the key: {exc}"
    return f"the API refused new tasks: {exc}"


# Control flow between a render and the walk, not errors for the user: the engine catches
# them per scene, records the message in the result and goes on with the other scenes.
class SceneFailed(Exception):
    pass


class SceneSkipped(Exception):
    pass


class TaskUnknown(SceneFailed):
    """The API does not know a task past the grace after its create: it may exist, paid for."""


@dataclass
class TaskRunner:
    """Runs renders for one apply: at most `parallelism` of them rendering remotely at once."""

    provider: Provider | None  # None: the plan renders nothing
    journal: Journal
    cache: Cache
    emit: Emit
    sleep: Sleep
    rng: random.Random
    wall_clock: Callable[[], float]
    monotonic: Callable[[], float]
    poll: PollConfig
    tmp_dir: Path
    parallelism: int
    fail_fast: bool = False
    unknown_task_grace: float = UNKNOWN_TASK_GRACE
    meter: BudgetMeter | None = None  # the apply's budget, charged as renders report usage
    # Wraps each paid render (the team's remote claims the key around it and pushes after).
    around: Around | None = None
    workers: FetchWorkers | None = None  # processes that fetch outputs; None: on the loop
    # The scenes on renders/contact.png: their strips are made as their outputs arrive, and
    # kept here (by video sha256) for the review page after the apply.
    sheet: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        self.strips: dict[str, Strip] = {}
        self.paid_before: set[str] = set()  # keys whose render an earlier apply submitted (and paid)
        # Why new submissions stopped (Ctrl-C, a refused key, --fail-fast); None while they go on.
        # The engine reads and sets this same attribute: one flag for the walk and the renders.
        self.stop_submitting: str | None = None
        self.semaphore = asyncio.Semaphore(self.parallelism)  # tasks rendering remotely
        # One render per key per apply: scenes with the same key wait for the first one's.
        self.flights: dict[str, asyncio.Future[CachedRender | str]] = {}
        self.delivered: dict[str, CachedRender] = {}  # in the cache's blobs, by key
        self.uncommitted: list[CachedRender] = []  # delivered, not yet in the cache's index
        self.uncommitted_paid = False  # one of them came from a task of this apply's (not a pull)
        self.not_indexed: list[list[CachedRender]] = []  # batches the index refused (lock writer's thread)
        self.journal_check: asyncio.Future[None] | None = None  # the journal takes entries: once an apply
        self.journal_refused = False  # its failure was reported (by the first scene that met it)
        self.creating: set[asyncio.Future[TaskStatus]] = set()  # creates and their entries under way
        self.lost_creates: set[str] | None = None  # keys an earlier apply's create went unanswered for
        # Tasks created (paid for) whose journal entry could not be written, until collected:
        # `journal_unrecorded` tries again at the end, when the apply's own failures have freed
        # some space, so that the next apply collects them instead of paying again.
        self.unrecorded: dict[str, JournalEntry] = {}  # by key

    def cached(self, key: str) -> CachedRender | None:
        """The render for `key` from this apply or the cache."""
        return self.delivered.get(key) or self.cache.lookup(key)

    def deliver_pulled(self, render: CachedRender) -> None:
        """A render whose blobs are in the cache (pulled from the team's remote): this apply uses
        it, and the next lock write indexes it with the others."""
        self.delivered[render.key] = render
        self.uncommitted.append(render)

    def take_commit(self) -> tuple[Callable[[], None], bool]:
        """The renders delivered so far, taken off the list, as a call that indexes them in
        one transaction and only then drops their tasks from the journal: the cache now
        vouches for them. Until it runs a killed apply leaves them journalled, and the next
        one collects them at no new cost. The lock writer runs it before the lock names them.
        With it, whether a task's render is among them: its blobs, written without an fsync
        of their own, must then be flushed first (`state.unsynced`). Pulled blobs need not be:
        after a power cut a blob the index names but the disk lost fails the cache's own
        check (size, sha256) and is pulled again, never paid for."""
        batch, self.uncommitted = self.uncommitted, []
        while self.not_indexed:  # a batch whose transaction failed (a full disk) goes in again
            batch = self.not_indexed.pop() + batch
        paid, self.uncommitted_paid = self.uncommitted_paid, False

        def commit() -> None:
            # A render whose blob has gone since it was delivered (the cache folder deleted
            # during the apply) is not indexed, and its task stays journalled: the next apply
            # collects it again at no new cost, where an index entry naming nothing would have
            # dropped the task and left the render to be paid for again.
            kept = [r for r in batch if self.cache.has_blob(r.video_sha256, r.video_bytes)
                    and self.cache.has_blob(r.last_frame_sha256, r.last_frame_bytes)]
            if kept:
                try:
                    self.cache.record_many(kept)
                except BaseException:
                    self.not_indexed.append(kept)  # their tasks stay in the journal meanwhile
                    raise
                self.journal.forget_many([r.key for r in kept])
        return commit, paid

    @property
    def api(self) -> Provider:
        if self.provider is None:
            raise AssertionError("a render was asked of an apply whose plan renders nothing")
        return self.provider

    async def obtain(self, key: SceneKey, request: RenderRequest, *, fresh: bool = False,
                     collect: bool = False, unplanned: tuple[int, float | None] | None = None
                     ) -> tuple[CachedRender, bool]:
        """The render for `key`, and whether it came from another scene's render or the cache
        (True) rather than a task of this scene's own. A key already rendered, or rendering,
        in this apply is never paid for again; `fresh` (--replace) skips the cache; `collect`
        (the plan's action) takes the journalled task and never submits one in its place.
        `unplanned`: the estimate of a render the plan did not count (a wait; a collect, whose
        task may not render), checked against the budget before one is submitted."""
        flight = self.flights.get(key.hex)
        if flight is None and not fresh:
            cached = self.cached(key.hex)
            if cached is not None:
                return cached, True
        if flight is not None:
            outcome = await asyncio.shield(flight)
            if isinstance(outcome, str):
                raise SceneSkipped(outcome)
            return outcome, True
        flight = self.flights[key.hex] = asyncio.get_running_loop().create_future()
        try:
            # --replace renders afresh: not the team's copy of the key pulled in its place (nor a
            # claim waited on); the remote keeps its write-once entry, so nothing is pushed either.
            if self.around is not None and not fresh:
                cached = await self.around(key.hex, request.scene, lambda: self.render(
                    key, request, fresh=fresh, collect=collect, unplanned=unplanned))
            else:
                cached = await self.render(key, request, fresh=fresh, collect=collect, unplanned=unplanned)
        except BaseException as exc:
            reason = "interrupted" if isinstance(exc, asyncio.CancelledError) else str(exc)
            flight.set_result(f"the render it shares with {request.scene} did not finish: {reason}")
            raise
        flight.set_result(cached)
        return cached, False

    async def render(self, key: SceneKey, request: RenderRequest, *, fresh: bool = False,
                     collect: bool = False, unplanned: tuple[int, float | None] | None = None) -> CachedRender:
        """Submit (or collect) and wait while holding a render slot; download and check after
        releasing it, so the slot bounds only the tasks rendering remotely. A task is submitted
        again only when the API says it did not render (003021099, expired), at most
        MAX_RESUBMITS times, each one reported; a task the API does not know is never. With
        `collect` the journal must hold the task the plan saw: else the plan is stale."""
        resubmits = 0
        created = 0  # creates this apply sent for it (an expired task of an earlier apply is not one)
        if fresh and not collect:  # --replace, with no task of the key to collect (the plan's choice)
            await asyncio.to_thread(self.journal.forget, key.hex)
        while True:
            try:
                async with self.semaphore:
                    # A task past its expiry is asked about like any other: it may have finished,
                    # paid for, before it expired; the API says whether it did (`expired`: submitted
                    # again, as below; unknown: never).
                    entry = self.journalled(request)
                    if collect and resubmits == 0 and entry is None:
                        raise SceneFailed("the plan is stale: run plan again (the task it was to collect is no "
                                          "longer in the journal)")
                    if entry is None:
                        if self.stop_submitting is not None:
                            raise SceneSkipped(self.stop_submitting)
                        if unplanned is not None and self.meter is not None:
                            over = self.meter.unplanned(*unplanned, (
                                "the task it was to collect did not render" if collect else
                                "another machine's claim on it ended without its render"))
                            if over is not None:
                                raise self.failure(request.scene, over)
                            unplanned = None  # counted once; a resubmission is charged as it reports
                        status, since = await self.submit(request), self.wall_clock()
                        created += 1
                        paid_here = True
                    else:
                        paid_here = False  # an earlier apply's task: paid then, not in this apply's budget
                        self.emit({"event": "progress", "scene": request.scene, "task_id": entry.task_id,
                                   "state": "collecting"})
                        status = TaskStatus(entry.task_id, TaskState.RUNNING, locator=entry.locator)
                        since = entry.submitted_at
                    try:
                        status = await self.wait(request.scene, status, since,
                                                 request.execution_expires_after or DEFAULT_EXPIRY)
                    except TaskUnknown:
                        # Said in its entry: --replace then submits afresh rather than collect it.
                        await asyncio.to_thread(self.mark_unknown, key.hex, status.task_id)
                        raise
                    except TransientError as exc:  # the API was not answering: the task is still there
                        raise self.failure(request.scene, (
                            f"{exc}; task {status.task_id} is paid for and its id stays in the journal, so "
                            f"the next apply asks again at no new cost (do not --replace it)")) from None
                    if status.state is TaskState.COMPLETED and status.tokens is not None and paid_here:
                        # Before the slot goes to a new submission.
                        self.charge(status.tokens, status.cost, request.service_tier)
                if status.state is TaskState.COMPLETED:
                    try:
                        cached = await self.deliver(request, key, status)
                    except BaseException:
                        # Its failed download gave back the space it took: the entry may fit now.
                        self.record_unrecorded(key.hex)
                        raise
                    self.unrecorded.pop(key.hex, None)  # collected: in the cache
                    if not paid_here:
                        self.paid_before.add(key.hex)
                    if status.tokens is None and paid_here:
                        self.charge(cached.tokens, cached.cost, request.service_tier)
                    return cached
                retry = RESUBMIT_CODES.get(status.error_code or "")
                if retry is None or resubmits >= MAX_RESUBMITS:
                    message = status.error_message or "the render failed"
                    code = f" ({status.error_code})" if status.error_code else ""
                    again = (f"; submitted {created} time(s) in this apply ({resubmits} of them again), "
                             f"the most it does" if retry is not None else "")
                    # The failure first: with --fail-fast no other scene may take the slot just freed.
                    error = self.failure(request.scene,
                                         f"{self.api.type} task {status.task_id} failed{code}: {message}{again}")
                    await asyncio.to_thread(self.journal.forget, key.hex)
                    raise error
                await asyncio.to_thread(self.journal.forget, key.hex)
                resubmits += 1
                self.resubmitted(request.scene, status.task_id, retry, resubmits)
                await self.sleep(self.backoff(resubmits))
            except (AuthError, AccountError) as exc:
                self.stop_submitting = stop_reason(exc)
                raise self.failure(request.scene, str(exc)) from None
            except RenderFailed as exc:
                error = self.failure(request.scene, str(exc))
                await asyncio.to_thread(self.journal.forget, key.hex)
                raise error from None
            except ProviderError as exc:
                # The task id stays in the journal: a later apply can still collect it.
                raise self.failure(request.scene, str(exc)) from None

    def mark_unknown(self, key: str, task_id: str) -> None:
        """The API does not know `key`'s journalled task: its entry says so (and stays)."""
        try:
            known = self.journal.get(key)
        except DamagedEntry:
            return
        if known is not None and known.task_id == task_id and known.unknown_at is None:
            self.journal.put(dataclasses.replace(known, unknown_at=self.wall_clock()))

    def journalled(self, request: RenderRequest) -> JournalEntry | None:
        """This key's task from an earlier apply, if it is this provider's. A damaged entry
        fails the scene and stays: a task may exist, and paying for another is not ours to do
        (the local provider's is dropped: nothing is paid, and its task is its key's)."""
        try:
            entry = self.journal.get(request.key, self.api.type if self.api.paid else None)
        except DamagedEntry as exc:
            if not self.api.paid:  # its tasks cost nothing and are found again by key: no money at stake
                self.emit({"event": "warning", "scene": request.scene, "message": f"{exc}; dropped (a local "
                           "render costs nothing: rendered again)"})
                self.journal.forget(request.key)
                return None
            raise self.failure(request.scene, f"{exc}; a task may already exist for it, so nothing was "
                               f"submitted: look at the file and delete it, or run `sparkspec apply "
                               f"--replace {request.scene}` to render it afresh") from None
        if not self.api.paid and entry is not None:
            # Not journalled any more (an earlier version's entry): a local task is found by its
            # key, finished, or rendered again at no cost; one cut off by a kill is not collectable.
            self.journal.forget(request.key)
            return None
        return entry

    def resubmitted(self, scene_id: str, task_id: str, reason: str, count: int) -> None:
        self.emit({"event": "resubmitted", "scene": scene_id, "task_id": task_id, "reason": reason,
                   "count": count, "limit": MAX_RESUBMITS})

    def charge(self, tokens: int, cost: float | None, service_tier: str | None = None) -> None:
        """Count reported usage against the budget; once it is reached, submissions stop."""
        if self.meter is not None:
            over = self.meter.charge(tokens, cost, service_tier)
            if over is not None and self.stop_submitting is None:
                self.stop_submitting = over

    def failure(self, scene_id: str, message: str) -> SceneFailed:
        """The error that fails a scene. With --fail-fast, submissions stop here, before any
        other scene can take the render slot this one just freed."""
        if self.fail_fast and self.stop_submitting is None:
            self.stop_submitting = f"--fail-fast: {scene_id} failed"
        return SceneFailed(message)

    async def submit(self, request: RenderRequest) -> TaskStatus:
        """Create the task; its id is in the journal before anything else happens. The create and
        its entry run as a task of their own, which the cancellation of an interrupted apply does
        not reach: the API may be making the task, paid for, and only the create's answer names
        it. The apply's driver waits for these before it closes the provider (`settle_creates`)."""
        await self.journal_writable()
        creating = asyncio.ensure_future(self.create(request))
        self.creating.add(creating)
        creating.add_done_callback(self.creating.discard)
        return await asyncio.shield(creating)

    async def settle_creates(self) -> None:
        """Wait for the creates still under way (after Ctrl-C: their answers name paid tasks, which
        go into the journal). Their failures were the scenes' own, reported or cancelled with them."""
        while self.creating:
            done, _ = await asyncio.wait(set(self.creating))
            for task in done:
                if not task.cancelled():
                    task.exception()  # retrieved: a cancelled scene's create failing is not news

    async def create(self, request: RenderRequest) -> TaskStatus:
        """`submit`'s create and journal entry, uninterrupted."""
        try:
            if self.api.paid:  # nothing is paid otherwise, so nothing to warn of after a kill
                self.journal.sending(request.key)  # a kill before the answer still leaves this behind
        except OSError:
            pass  # the journal's own check said it can be written; the create's answer still goes there
        try:
            status = await self.api.submit(request)
        except asyncio.CancelledError:
            # Only a second Ctrl-C (or the loop's end) cancels a create: the API may have made a
            # task whose id never came back. Marked, so that the next plan says so beside the
            # render, as after a kill (the creates log goes with this apply's end).
            if self.api.paid:
                try:
                    self.journal.mark_unconfirmed(request.key, request.scene, self.api.type, self.wall_clock())
                except OSError:
                    pass
                self.emit({"event": "warning", "scene": request.scene, "message": (
                    "its create was sent and its answer not awaited: the API may have made a task, paid for, that "
                    "sparkspec cannot name (the next plan says so beside this render)")})
            raise
        except (AuthError, AccountError) as exc:
            self.stop_submitting = stop_reason(exc)
            raise self.failure(request.scene, str(exc)) from None
        except CreateUnconfirmed as exc:
            try:
                self.journal.mark_unconfirmed(request.key, request.scene, self.api.type, self.wall_clock())
            except OSError:
                pass  # the failure's message says it all the same
            if isinstance(exc, UnreadableCreate) and self.stop_submitting is None:
                self.stop_submitting = (f"not submitted: the API answered {request.scene}'s create without a task "
                                        f"sparkspec can read")
            raise self.failure(request.scene, str(exc)) from None
        except ProviderError as exc:
            raise self.failure(request.scene, str(exc)) from None
        # On the event loop, not in a thread: the shortest path from a paid task's id to the
        # disk is to write it now, before anything else runs, not to queue it behind other
        # blocking work in the executor (one small fsync'd file; benchmarks/apply_bench.py journal).
        # The local renderer's tasks are not: nothing is paid, and its task is found by its key.
        entry = JournalEntry(request.key, request.scene, self.api.type, status.task_id, self.wall_clock(),
                             request.execution_expires_after or DEFAULT_EXPIRY, status.locator)
        try:
            if self.api.paid:
                self.journal.put(entry)
        except OSError as exc:  # the disk filled up since the check: the task is paid for all the same
            self.unjournalled(request.scene, status.task_id, exc)
            self.unrecorded[request.key] = entry
        if self.lost_creates is None:
            self.lost_creates = self.journal.listing()[1]
        if request.key in self.lost_creates:
            self.journal.confirm(request.key)
        self.emit({"event": "submitted", "scene": request.scene, "task_id": status.task_id})
        return status

    async def journal_writable(self) -> None:
        """Before an apply's first create: the journal can take the paid task's id. When it
        cannot, the first scene fails with the reason and no scene submits anything."""
        if self.journal_check is None:
            self.journal_check = asyncio.ensure_future(asyncio.to_thread(self.journal.check_writable))
        try:
            await asyncio.shield(self.journal_check)
        except OSError as exc:
            if self.stop_submitting is None:
                self.stop_submitting = f"not submitted: the journal cannot be written ({exc.strerror or exc})"
            if self.journal_refused:
                raise SceneSkipped(self.stop_submitting) from None
            self.journal_refused = True
            raise

    def journal_unrecorded(self) -> None:
        """At the end of the apply: the tasks it created and could neither journal nor collect
        (a full disk) go into the journal now if they can, each said in a warning."""
        for key in list(self.unrecorded):
            self.record_unrecorded(key)

    def record_unrecorded(self, key: str) -> None:
        """Journal a task the journal could not take when it was created, if it can now."""
        entry = self.unrecorded.get(key)
        if entry is None:
            return
        try:
            self.journal.put(entry)
        except OSError:
            return  # its warning, with the id, stands
        del self.unrecorded[key]
        self.emit({"event": "warning", "scene": entry.scene, "task_id": entry.task_id,
                   "message": f"task {entry.task_id} is in the journal after all: the next apply collects it "
                              "at no new cost"})

    def unjournalled(self, scene_id: str, task_id: str, exc: OSError) -> None:
        """A created task whose id the journal could not take: no other task is submitted, and
        this one is polled and collected from memory (an apply stopped first loses it: it is named)."""
        if self.stop_submitting is None:
            self.stop_submitting = f"not submitted: the journal cannot be written ({exc.strerror or exc})"
        where = f"{exc.filename}: " if exc.filename else ""
        self.emit({"event": "warning", "scene": scene_id, "task_id": task_id,
                   "message": f"task {task_id} was created (it is paid for) but the journal could not record it "
                              f"({where}{exc.strerror or exc}); this apply collects it and submits no other "
                              f"task; an apply stopped before then loses it (its id is only in this line)"})

    def backoff(self, attempt: int) -> float:
        base = min(self.poll.max, self.poll.initial * (2 ** min(attempt - 1, 30)))
        # Jitter keeps tasks from polling in step, never below poll.initial (README: between
        # poll.initial and poll.max).
        return float(max(self.poll.initial, base * (0.5 + self.rng.random() / 2)))

    def next_poll(self, attempt: int, status: TaskStatus, elapsed: float, stalled: int = 0) -> float:
        """When to look again. With a reported progress p after `elapsed` seconds, the task
        should be done in elapsed*(1-p)/p: poll then, but never wait longer than the time
        already spent (an early, small p extrapolates badly) nor than poll.max. Without
        progress, or when it has not moved for `stalled` polls (the prediction was wrong:
        a task at 99% for a minute), back off exponentially with jitter. Never sooner than
        poll.initial/4."""
        p = status.progress
        if stalled:
            return self.backoff(stalled)
        if p is None or not 0 < p < 1 or elapsed <= 0:
            return self.backoff(attempt)
        remaining = elapsed * (1 - p) / p
        return max(self.poll.initial / 4, min(self.poll.max, elapsed, remaining + 0.005))

    async def wait(self, scene_id: str, status: TaskStatus, since: float,
                   expires_after: int = DEFAULT_EXPIRY) -> TaskStatus:
        """Poll until the task ends. An API may not show a task it just made: a 404 up to
        `unknown_task_grace` seconds after the create is waited out; after that the scene
        fails and the task stays in the journal (it may exist and be paid for)."""
        attempt = 0
        started = self.monotonic()
        warned: set[str] = set()
        unreadable = 0  # answers in a row that were not this task's status
        stalled, seen = 0, status.progress  # polls in a row whose progress did not move
        while status.state is TaskState.RUNNING:
            if status.unknown_status is not None:
                self.unknown_status(scene_id, status, warned, since, expires_after)
            attempt += 1
            if not self.api.poll_waits:  # the local renderer's poll waits itself
                await self.sleep(self.next_poll(attempt, status, self.monotonic() - started, stalled))
            try:
                polled = await self.api.poll(status.task_id, status.locator)
            except BadAnswer as exc:
                # A proxy's error page, a truncated body: the task is still there and paid for,
                # so it is asked again (with the polls' backoff), and only a run of such
                # answers fails the scene (its id stays in the journal).
                unreadable += 1
                stalled += 1  # no news of its progress: back off, not the prediction's next look
                if unreadable == 1:
                    self.emit({"event": "warning", "scene": scene_id, "task_id": status.task_id,
                               "message": f"{exc}; asking again"})
                if unreadable >= UNREADABLE_POLLS:
                    raise self.failure(scene_id, f"{exc} ({unreadable} answers in a row); its id stays in the "
                                                 "journal, so the next apply asks again at no new cost") from None
                continue
            except TaskNotFound:
                waited = self.wall_clock() - since
                if waited < self.unknown_task_grace:
                    # Not visible yet: asked again with backoff. The create's progress (a fast task's
                    # 99%) would otherwise have it asked every poll.initial/4 for the whole grace.
                    stalled += 1
                    continue
                self.failure(scene_id, "")  # --fail-fast stops submissions, as for any failure
                raise TaskUnknown((
                    f"{self.api.type} task {status.task_id} is unknown to the API {waited:.0f} s after it was "
                    "created; it may exist and be paid for, so it was not submitted again. Its id stays in "
                    f"the journal for the next apply to ask again; `sparkspec apply --replace {scene_id}` "
                    "submits afresh")) from None
            unreadable = 0
            moved = polled.progress is None or seen is None or polled.progress > seen
            stalled, seen = (0 if moved else stalled + 1), polled.progress
            status = polled
            if status.state is TaskState.RUNNING:
                self.emit({"event": "progress", "scene": scene_id, "task_id": status.task_id,
                           "progress": status.progress})
        return status

    def unknown_status(self, scene_id: str, status: TaskStatus, warned: set[str], since: float,
                       expires_after: int) -> None:
        """A status new to sparkspec: the task exists and may be paid for, so it is polled
        (with one warning naming the status) until its own expiry, counted from its
        `created_at` as the API reports it, else from when this apply (or the journal entry it
        collects) saw it created."""
        name = status.unknown_status or ""
        if name not in warned:
            warned.add(name)
            self.emit({"event": "warning", "scene": scene_id, "task_id": status.task_id,
                       "message": f"task {status.task_id} reports the unknown status {name!r}; "
                                  f"still polling it until it finishes or expires"})
        now = self.wall_clock()
        created = status.created_at
        if created is None or created > now + CLOCK_SKEW:  # none, or not unix seconds (milliseconds?)
            created = since
        if now > created + expires_after:
            raise ProviderError(f"task {status.task_id} still reports the unknown status {name!r} past its "
                                f"expiry; its id stays in the journal, so a later apply can collect it")

    async def fetch(self, job: FetchJob) -> Fetched:
        """One attempt at the outputs: in a fetch worker when the apply has them (and one is
        still alive), else here."""
        if self.workers is not None:
            fetched = await self.workers.fetch(job)
            if fetched is not None:
                return fetched
        return await fetch_here(self.api, job)

    async def deliver(self, request: RenderRequest, key: SceneKey, status: TaskStatus) -> CachedRender:
        """Download, check and store both outputs in the cache; `commit` indexes them."""
        cache = self.cache
        unique = f"{key.hex[:16]}-{secrets.token_hex(6)}"  # never shared with another task's download
        parts = (self.tmp_dir / f"{unique}.mp4.part", self.tmp_dir / f"{unique}.png.part")
        for attempt in range(1, MAX_DOWNLOAD_ATTEMPTS + 1):
            if not status.video_url:
                raise self.failure(request.scene, f"task {status.task_id} completed without a video; it stays in "
                                   f"the journal (it is paid for), so `sparkspec apply --replace {request.scene}` "
                                   "renders it afresh")
            try:
                fetched = await self.fetch(FetchJob(status.video_url, status.last_frame_url, *parts,
                                                    request.scene in self.sheet, request.scene))
                if fetched.strip is not None:
                    self.strips[fetched.video.sha256] = fetched.strip
                # Flushed by the lock writer before the cache index names them and the journal drops
                # the task: until then a power cut costs a download, never a render.
                await asyncio.to_thread(cache.put_blob, fetched.video.path, fetched.video.sha256, refetchable=True)
                await asyncio.to_thread(cache.put_blob, fetched.frame.path, fetched.frame.sha256, refetchable=True)
                break
            except (FileNotFoundError, DiskError) as exc:
                if getattr(exc, "errno", None) != errno.ENOENT or attempt == MAX_DOWNLOAD_ATTEMPTS:
                    raise
                # The state folder went from under the apply (.sparkspec/ deleted): this task is
                # paid for, so its outputs are fetched again into a folder made afresh.
                for part in parts:
                    part.unlink(missing_ok=True)
                await asyncio.to_thread(self.tmp_dir.mkdir, parents=True, exist_ok=True)
                self.emit({"event": "warning", "scene": request.scene, "task_id": status.task_id,
                           "message": f"{exc}; fetching task {status.task_id}'s outputs again"})
            except (DownloadError, MediaError) as exc:
                for part in parts:
                    part.unlink(missing_ok=True)
                expired = isinstance(exc, UrlExpired)
                # A body cut short or of the wrong length (DamagedOutput) was already fetched again
                # by the provider's retry policy: only a whole body that is not a video is fetched
                # again here (a download cut short every time was fetched 6 x 4 times).
                damaged = isinstance(exc, MediaError)
                if not (expired or damaged) or attempt == MAX_DOWNLOAD_ATTEMPTS:
                    # The task id stays in the journal: a later apply can download it again.
                    raise self.failure(request.scene,
                                       f"download of task {status.task_id} failed: {exc}; the task is paid for and "
                                       "stays in the journal, so the next apply downloads it at no new cost (do not "
                                       "--replace it)") from None
                if expired:  # signed URLs lapse: the task gives fresh ones
                    status = await self.api.poll(status.task_id, status.locator)
        video, frame, info = fetched.video, fetched.frame, fetched.info
        if fetched.frame_extracted is not None:
            self.emit({"event": "warning", "scene": request.scene, "task_id": status.task_id,
                       "message": f"task {status.task_id}: {fetched.frame_extracted}; extracted it from the video"})
        # Unreported usage: the formula on what was actually rendered (an adaptive ratio's
        # size is only known from the output).
        tokens = status.tokens if status.tokens is not None else \
            apifacts.estimate_tokens(info.width, info.height, info.frames)
        inputs = dict(key.inputs)
        cached = CachedRender(
            key=key.hex, provider=self.api.type, model=request.model,
            task_id=status.task_id, seed=status.seed if status.seed is not None else key.seed,
            tokens=tokens, video_sha256=video.sha256, video_bytes=video.size,
            last_frame_sha256=frame.sha256, last_frame_bytes=frame.size, inputs=inputs,
            seed_derived=key.seed_derived, cost=status.cost, last_frame_extracted=fetched.frame_extracted is not None)
        self.delivered[key.hex] = cached
        self.uncommitted.append(cached)
        self.uncommitted_paid = True
        return cached
