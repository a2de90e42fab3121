"""Apply with the team's remote: pull what it has, claim before paying, push what was rendered.

The engine calls three things: `start()` once (retries pushes queued by earlier runs),
`pull(scene, key)` for a scene the plan pulls (with `thumbnail`, the picked take's
contact-sheet strip is decoded as soon as it lands, while the other pulls stream), and
`render(scene, key, render_fn)` around every paid render. `render` claims the key first
(If-None-Match). If another machine holds it, this one waits for that machine's entry and
pulls it (`--no-wait`: the scene is skipped); a claim whose ETag stalls for one ttl is taken over (If-Match),
and so at once is one left by a crashed apply on this machine (`Claim.abandoned`); a task id in
it goes into the local journal, so the render is collected rather than paid again. While a
render runs its claim is renewed every ttl/4 and carries the task id once submitted. After
the render the blobs and the entry go up (a failure queues the key and the apply goes on),
then the claim is deleted. Read-only: no claim, no push, nothing written.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sparkspec.apply.tasks import Emit, SceneFailed, SceneSkipped, Sleep
from sparkspec.errors import RemoteError
from sparkspec.remote.claims import Claim, ClaimTask, ClaimWatch, Held, Seen
from sparkspec.remote.session import Remote
from sparkspec.remote.index import blobs_there
from sparkspec.remote.transfer import BlobProblem, check_format
from sparkspec.state.cache import Cache, CachedRender
from sparkspec.state.journal import DamagedEntry, Journal

if TYPE_CHECKING:
    from sparkspec.review.contact import Strip
    from sparkspec.review.sheetid import KnownSheet

MAX_WAIT_POLL = 2.0  # seconds between looks at another machine's claim and entry
SHEET_WAIT = 5.0  # seconds a contact sheet's request may outlast the apply's pulls
UNCLAIMED = "unclaimed"  # a store that fails claims says so once a run, not once a scene
TRANSFERS = 8  # pulls streaming at once: each holds buffers, and every pulled scene starts at once


class RemoteApply:
    def __init__(self, remote: Remote, cache: Cache, journal: Journal, tmp_dir: Path, emit: Emit, *,
                 hits: dict[str, CachedRender] | None = None, wait: bool = True, sleep: Sleep = asyncio.sleep,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.remote = remote
        self.cache = cache
        self.journal = journal
        self.tmp_dir = tmp_dir
        self.emit = emit
        self.hits = dict(hits or {})
        self.wait = wait
        self.sleep = sleep
        self.monotonic = monotonic
        self.held: dict[str, Held] = {}  # key -> our claim, while its render runs
        self.kick: dict[str, asyncio.Event] = {}  # wakes a heartbeat early (a task id to write)
        self.warned: set[str] = set()
        self.pulled: set[str] = set()  # keys pulled instead of rendered
        # Where a pulled render goes to be indexed with the apply's renders, in the lock
        # writer's batches (after the flush of what they name); None: each is indexed as it lands.
        self.deliver: Callable[[CachedRender], None] | None = None
        self.pushed: list[str] = []
        self.queued: list[str] = []
        self._transfers: asyncio.Semaphore | None = None  # made in the apply's own event loop
        self._decoders: asyncio.Semaphore | None = None  # contact-sheet strips decoding at once
        self._strip_tasks: set[asyncio.Task[None]] = set()
        self.strips: dict[str, Strip] = {}  # contact-sheet strips of pulled videos, by sha256
        self.sheet: KnownSheet | None = None  # the contact sheet a teammate pushed for this lock
        self._sheet_task: asyncio.Task[None] | None = None

    @classmethod
    def push_queued(cls, remote: Remote, cache: Cache, emit: Emit) -> None:
        """Retry the queued uploads on their own (an apply with nothing else to do)."""
        if remote.writable and remote.queue.keys():
            state = remote.state_dir
            asyncio.run(cls(remote, cache, Journal(state / "journal"), state / "tmp", emit).start())

    @property
    def ttl(self) -> float:
        return self.remote.settings.claim_ttl

    def warn_once(self, scene: str | None, message: str, *, topic: str | None = None) -> None:
        """Emit `message` unless it (or, given `topic`, anything on that topic) was emitted."""
        if (topic or message) not in self.warned:
            self.warned.add(topic or message)
            self.emit({"event": "remote_warning", "message": message, **({"scene": scene} if scene else {})})

    # -- the queue -----------------------------------------------------------------------
    async def start(self) -> None:
        """Push what earlier applies could not (still in the local cache)."""
        if not self.remote.writable:
            return
        for key in await asyncio.to_thread(self.remote.queue.keys):
            render = await asyncio.to_thread(self.cache.lookup, key)
            if render is None:
                await asyncio.to_thread(self.remote.queue.remove, key)
                continue
            if not await self.push(None, render):
                return  # the store still fails: keep the rest queued, no retry storm

    async def push(self, scene: str | None, render: CachedRender) -> bool:
        try:
            created = await self.remote.push(render, self.cache)
            # Not created: the remote has an entry of the key already (a teammate's render won
            # the write-once entry, or this one is there with its blobs gone: mended here).
            outcome, detail = ("created", 0) if created else await self.remote.mend(render, self.cache)
        except RemoteError as exc:
            await asyncio.to_thread(self.remote.queue.add, render.key)
            self.queued.append(render.key)
            self.emit({"event": "push_queued", "key": render.key, "error": str(exc), **({"scene": scene} if scene else {})})
            return False
        if outcome == "broken":
            self.emit({"event": "remote_warning", "key": render.key,
                       "message": f"{scene or render.key[:12]}: not pushed: {detail}",
                       **({"scene": scene} if scene else {})})
            return True
        if outcome == "other":  # its files went up; the write-once entry keeps naming the other render
            self.emit({"event": "remote_warning", "key": render.key,
                       "message": f"{scene or render.key[:12]}: the team's remote has another render of this key "
                                  "(write-once); this render's files were uploaded, so a teammate whose lock names "
                                  "it pulls it", **({"scene": scene} if scene else {})})
            self.pushed.append(render.key)
            return True
        self.pushed.append(render.key)
        self.emit({"event": "pushed", "key": render.key, **({"scene": scene} if scene else {})})
        return True

    # -- pulls ---------------------------------------------------------------------------
    async def entry(self, key: str) -> CachedRender | None:
        found = self.hits.get(key)
        if found is not None:
            return found
        if key in await self.remote.still_bad([key]):
            return None  # its blobs failed a pull before and are as they were: a miss, already reported
        render = await self.remote.read_entry(key)
        if render is not None and not await blobs_there(self.remote.store, render):
            return None  # an entry whose blobs are gone or cut short (the plan said so): rendered here
        return render

    async def pull(self, scene: str, key: str, *, thumbnail: bool = False) -> CachedRender:
        """The plan's `pull`: into the local cache, verified. Fails the scene (no unplanned
        render) when the entry is gone or its blobs are damaged; the next plan renders it.
        `thumbnail`: start the contact sheet's strip of the video once it is in."""
        try:
            render = await self.entry(key)
            if render is None:
                raise SceneFailed(f"the team's remote no longer has key {key[:12]}; run `sparkspec plan` again")
            if self._transfers is None:
                self._transfers = asyncio.Semaphore(TRANSFERS)
            async with self._transfers:
                render = await self.remote.pull(render, self.cache, self.tmp_dir, record=self.deliver is None)
                if self.deliver is not None:
                    self.deliver(render)
        except BlobProblem as exc:
            raise SceneFailed(f"{exc}; the next `sparkspec apply` renders it") from None
        except RemoteError as exc:
            raise SceneFailed(f"pull failed: {exc}") from None
        self.pulled.add(key)
        if thumbnail and self.sheet is None:
            task = asyncio.create_task(self._strip(scene, render))
            self._strip_tasks.add(task)
            task.add_done_callback(self._strip_tasks.discard)
        return render

    async def _strip(self, scene: str, render: CachedRender) -> None:
        """Decode the strip (kept in `strips`) while other pulls stream, one decoder a core, so
        the review page after the apply finds it made; not when the sheet fetched for
        this lock answers with a picture. Strips still waiting when the
        apply's loop ends are cancelled and the review page decodes them; one that fails is
        left for the review page to report."""
        from sparkspec.review.contact import SheetEntry, make_strip

        if self._sheet_task is not None:
            # Decided once the sheet's request has answered (a teammate's sheet makes the strip
            # needless), not by which of the two came back first.
            await asyncio.wait([self._sheet_task])
        if self.sheet is not None:
            return
        if self._decoders is None:
            self._decoders = asyncio.Semaphore(os.cpu_count() or 1)
        frame = self.cache.blob_path(render.last_frame_sha256) if render.last_frame_sha256 else None
        entry = SheetEntry(scene, self.cache.blob_path(render.video_sha256), render.video_sha256, frame)
        async with self._decoders:
            try:
                self.strips[render.video_sha256] = await asyncio.to_thread(make_strip, entry)
            except Exception:  # noqa: BLE001 - nobody awaits this task: the review page decodes it again and reports
                pass

    def expect_sheet(self, digest: str) -> None:
        """Fetch the contact sheet `digest` names (the lock this apply starts from) while the
        pulls run: when a teammate pushed it, the strips of the videos pulled need no decoding."""
        self._sheet_task = asyncio.create_task(self._fetch_sheet(digest))

    async def _fetch_sheet(self, digest: str) -> None:
        from sparkspec.review.sheetid import KnownSheet

        try:
            png = await self.remote.fetch_sheet(digest)
        except RemoteError:
            return  # a picture: without it the review page decodes the strips, as without a remote
        if png is not None:
            self.sheet = KnownSheet(digest, png)
            for task in list(self._strip_tasks):
                task.cancel()

    async def settle_sheet(self) -> KnownSheet | None:
        """The sheet fetched for this apply: its request has had the whole apply, and gets
        SHEET_WAIT more; a store still silent then is not waited for (the sheet is decoded)."""
        if self._sheet_task is not None:
            await asyncio.wait([self._sheet_task], timeout=SHEET_WAIT)
            self._sheet_task.cancel()
        return self.sheet

    def took(self, key: str) -> bool:
        """Whether `key` was pulled (another machine rendered it) rather than rendered here."""
        return key in self.pulled

    # -- renders, claimed ----------------------------------------------------------------
    async def render(self, key: str, scene: str, render_fn: Callable[[], Awaitable[CachedRender]]) -> CachedRender:
        try:
            held = await self.claim(scene, key)
        except BaseException:  # a pull that failed after our claim, a lost claim: not left behind
            await self.release(scene, key)
            raise
        if isinstance(held, CachedRender):  # pulled: another machine's entry came after our claim
            await self.release(scene, key)
            return held
        beat = asyncio.create_task(self.heartbeat(key)) if held is not None else None
        rendered: CachedRender | None = None
        try:
            rendered = await render_fn()
            if self.remote.writable:
                await self.push(scene, rendered)
            return rendered
        finally:
            if beat is not None:
                beat.cancel()
                await asyncio.gather(beat, return_exceptions=True)
            if rendered is None and self.task_journalled(key):
                # Ctrl-C, or a failure that keeps the task for the next apply: it still renders,
                # paid for, and the claim names it. Left to lapse (no more heartbeats), so that
                # another machine takes it over and collects that task instead of paying again.
                self.held.pop(key, None)
                self.kick.pop(key, None)
            else:
                await self.release(scene, key)

    def task_journalled(self, key: str) -> bool:
        """A task of `key` is in this machine's journal: created, paid for, not collected."""
        try:
            return self.journal.get(key) is not None
        except DamagedEntry:
            return True

    async def release(self, scene: str, key: str) -> None:
        """Delete our claim of `key`, if we hold one: nobody renders it here any more."""
        mine = self.held.pop(key, None)
        self.kick.pop(key, None)
        if mine is not None:
            try:
                await self.remote.claims.release(mine)
            except RemoteError as exc:  # it expires by itself after one ttl
                self.warn_once(scene, f"claim of {scene} not released: {exc}")

    async def claims_work(self, scene: str) -> bool:
        if not self.remote.writable:
            return False
        try:
            await check_format(self.remote.store)  # a remote of another layout: no claims there either
            probe = await self.remote.claims_work()
        except RemoteError as exc:
            self.warn_once(scene, f"{exc}; rendering without a claim", topic=UNCLAIMED)
            return False
        if not probe.conditional:
            self.warn_once(None, f"remote {self.remote.display} ignores conditional writes ({probe.detail}): "
                                 "claims are off, so two machines applying at once may both render a scene")
        return probe.conditional

    async def claim(self, scene: str, key: str) -> Held | CachedRender | None:
        """Ours to render (Held; None when claims are off), or pulled after another machine
        rendered it."""
        use_claims = await self.claims_work(scene)
        mine = self.remote.new_claim(key)
        watch = ClaimWatch(self.ttl, self.monotonic)
        told = False
        try:
            while True:
                if use_claims:
                    got = await self.remote.claims.acquire(mine)
                else:
                    got = await self.remote.claims.read(key) or Held(mine, "")
                if isinstance(got, Held):
                    if use_claims:
                        self.held[key] = got
                    done = await self.entry(key)  # finished elsewhere since the plan?
                    return await self.pull(scene, key) if done is not None else (got if use_claims else None)
                seen: Seen | None = got
                while seen is not None:
                    # Its holder ran here and is gone: nobody renders it, nothing to wait for.
                    abandoned = seen.claim is not None and seen.claim.abandoned()
                    if not self.wait and not abandoned:
                        raise SceneSkipped(f"{self._who(seen)} (--no-wait)")
                    if not told and not abandoned:
                        told = True
                        self.emit({"event": "progress", "scene": scene, "state": "waiting", "reason": self._who(seen)})
                    if await self.entry(key) is not None:
                        return await self.pull(scene, key)
                    if abandoned or watch.dead(seen):
                        if not use_claims:  # read-only: render here (collecting its task), claim nothing
                            await self._adopt(scene, key, seen.claim)
                            return None
                        taken = await self.remote.claims.take_over(mine, seen)
                        if taken is not None:
                            if abandoned and seen.claim is not None:
                                self.emit({"event": "progress", "scene": scene, "state": "taken over",
                                           "reason": f"the claim of {seen.claim.who} (pid {seen.claim.pid}), "
                                                     "whose apply on this machine is gone"})
                            return await self._took_over(scene, key, taken)
                    await self.sleep(min(MAX_WAIT_POLL, self.ttl / 4))
                    seen = await self.remote.claims.read(key)
                # The claim went without an entry (its render failed): claim it ourselves.
        except RemoteError as exc:
            if key in self.held:
                raise SceneFailed(f"claim lost: {exc}") from None
            self.warn_once(scene, f"{exc}; rendering without a claim", topic=UNCLAIMED)
            return None

    async def _took_over(self, scene: str, key: str, taken: Held) -> Held | CachedRender:
        self.held[key] = taken
        if await self.entry(key) is not None:
            return await self.pull(scene, key)
        await self._adopt(scene, key, taken.claim)
        return taken

    async def _adopt(self, scene: str, key: str, claim: Claim | None) -> None:
        """The dead holder paid for the task its claim names: into the journal, to be collected
        rather than paid for again."""
        task = claim.task if claim is not None else None
        if task is not None and self.journal.get(key) is None:
            await asyncio.to_thread(self.journal.record, key, scene, task.provider, task.id,
                                    task.expires_after, task.submitted_at)

    @staticmethod
    def _who(seen: Seen) -> str:
        return seen.claim.describe() if seen.claim is not None else "claimed by another machine"

    async def heartbeat(self, key: str) -> None:
        """Renew our claim every ttl/4; write the task id as soon as the journal has it."""
        kick = self.kick.setdefault(key, asyncio.Event())
        while key in self.held:
            try:
                await asyncio.wait_for(kick.wait(), self.ttl / 4)
            except TimeoutError:
                pass
            kick.clear()
            held = self.held.get(key)
            if held is None:
                return
            entry = self.journal.get(key)
            task = ClaimTask(entry.task_id, entry.provider, entry.submitted_at, entry.expires_after) \
                if entry is not None else held.claim.task
            try:
                renewed = await self.remote.claims.heartbeat(held, task)
            except RemoteError:
                continue  # try again at the next beat; the claim outlives a few misses
            if renewed is None:
                self.held.pop(key, None)  # taken over: the taker collects our task from the claim
                return
            self.held[key] = renewed

    def observe(self, event: dict[str, Any]) -> None:
        """The runner's events: a submitted task's id goes into our claim at once."""
        if event.get("event") == "submitted":
            for key in self.held:
                entry = self.journal.get(key)
                if entry is not None and entry.task_id == event.get("task_id") and key in self.kick:
                    self.kick[key].set()

