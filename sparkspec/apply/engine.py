"""The apply engine: carries out a plan's changes with a provider, upstream scenes first.

Each change is executed as planned: no-op, restore and reuse install what the cache
holds, the render actions submit. Only a chained scene whose upstream renders in this
apply has its key computed here, and the planner's own rule (`decide`) then chooses
its action. A world that no longer matches the plan (a cached render gone, an input
file changed) fails the scene as stale instead of doing something else. A scene
starts when its upstream is done; a failed render skips its dependents while the
rest go on. One render's life (submit or collect, wait, download) is in tasks.py.

A scene's takes are separate changes run side by side, named `hero`, `hero.take2`...
in events and in the journal; its picked take is what chained scenes and sequences
use. A take whose outputs move (a new pick) leaves its old place empty unless another
take is there already: renders/<scene>.mp4 never shows a take the lock does not say.
"""

from __future__ import annotations

import asyncio
import os
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sparkspec.apply.budget import BudgetMeter
from sparkspec.errors import DiskError, MediaError, SparkspecError
from sparkspec.fsutil import atomic_copy, folder_id
from sparkspec.state.journal import Journal
from sparkspec.state.lockpaths import in_output_folder
from sparkspec.apply.outputs import materialize, remove_output
from sparkspec.apply.tasks import UNKNOWN_TASK_GRACE, Emit, SceneFailed, SceneSkipped, Sleep, TaskRunner
from sparkspec.state.cache import CachedRender
from sparkspec.keys import SceneKey, first_frame_input, scene_key
from sparkspec.apply.lockwriter import LockWriter
from sparkspec.state.lockfile import FileRecord, SceneRecord, SequenceRecord
from sparkspec.apply.adopt import adopt_decoding_frame, adopt_moved, render_of
from sparkspec.state import rerolls
from sparkspec.state.stitched import remember as remember_stitch, stitched
from sparkspec.plan.collect import Tasks
from sparkspec.plan.model import Action, Change, Plan
from sparkspec.plan.planner import decide, file_problem, output_paths, sequence_path
from sparkspec.providers.base import FirstFrame, HasFileHost, Provider, RenderRequest
from sparkspec.config.model import Project, Scene
from sparkspec.graph import topological_order
from sparkspec.state.workspace import Workspace

if TYPE_CHECKING:
    from sparkspec.apply.workers import Early, FetchWorkers
    from sparkspec.remote.applying import RemoteApply
    from sparkspec.review.sheetid import KnownSheet


# Actions whose outputs apply leaves as the lock says (restore copies them back exactly).
KEEPS_RECORD = (Action.NOOP, Action.RESTORE)


@dataclass
class ApplyResult:
    completed: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)  # scene -> message
    skipped: dict[str, str] = field(default_factory=dict)
    reused: list[str] = field(default_factory=list)
    restored: list[str] = field(default_factory=list)
    pulled: list[str] = field(default_factory=list)  # from the team's remote
    deleted: list[str] = field(default_factory=list)
    stitched: list[str] = field(default_factory=list)
    tokens: int = 0
    collected: int = 0  # of `completed`: tasks an earlier apply submitted, collected by this one
    collected_tokens: int = 0  # of `tokens`: theirs, paid when they were submitted
    interrupted: bool = False
    cancelled: list[str] = field(default_factory=list)  # queued tasks cancelled after Ctrl-C

    @property
    def ok(self) -> bool:
        return not self.failed and not self.skipped and not self.interrupted


@dataclass
class Engine:
    workspace: Workspace
    plan: Plan
    provider: Provider | None  # None: the plan renders nothing (reuse, restore, delete, stitch)
    emit: Emit
    parallelism: int
    fail_fast: bool = False
    unknown_task_grace: float = UNKNOWN_TASK_GRACE  # seconds a just-created task may answer 404
    meter: BudgetMeter | None = None  # stops submissions once reported usage reaches the budget
    sleep: Sleep = asyncio.sleep
    rng: random.Random = field(default_factory=random.Random)
    wall_clock: Callable[[], float] = time.time
    monotonic: Callable[[], float] = time.monotonic
    remote_wait: bool = True  # False (--no-wait): skip scenes another machine is rendering
    fetch_workers: int = 0  # processes that fetch and check outputs (apply.workers); 0: on the loop
    early_workers: Early | None = None  # worker processes started before the plan, taken first

    def __post_init__(self) -> None:
        ws = self.workspace
        self.project = ws.project
        self.tmp_dir = ws.state_dir / "tmp"
        self.state_id: tuple[int, int] | None = None  # the state folder as the apply began (device, inode)
        self.result = ApplyResult()
        self.done: dict[str, asyncio.Future[SceneRecord | None]] = {}  # by render name (hero.take2)
        self.installing: dict[str, asyncio.Lock] = {}  # by scene
        journal = Journal(ws.state_dir / "journal")
        self.remote: RemoteApply | None = None
        self.sheet: KnownSheet | None = None  # a teammate's contact sheet for the lock applied
        if ws.remote is not None:
            from sparkspec.remote.applying import RemoteApply

            self.remote = RemoteApply(ws.remote, ws.cache, journal, self.tmp_dir, self.emit,
                                      hits=ws.remote_findings.hits if ws.remote_findings else None,
                                      wait=self.remote_wait, sleep=self.sleep, monotonic=self.monotonic)
        self.runner = TaskRunner(
            provider=self.provider, journal=journal, cache=ws.cache,
            emit=self.runner_emit, around=self.remote.render if self.remote else None, sleep=self.sleep, rng=self.rng, wall_clock=self.wall_clock,
            monotonic=self.monotonic, poll=self.project.provider.poll, tmp_dir=self.tmp_dir,
            parallelism=self.parallelism, fail_fast=self.fail_fast, unknown_task_grace=self.unknown_task_grace,
            meter=self.meter, sheet=sheet_scenes(self.project))
        if self.remote is not None:
            self.remote.deliver = self.runner.deliver_pulled
        # The cache indexes what the lock will name before the lock is written.
        expected = set(ws.lock.scenes) | {c.id for c in self.plan.changes if c.kind == "scene"}
        self.lock = LockWriter(ws, before_write=self.runner.take_commit,
                               expected=len(expected) + len(ws.lock.sequences))
        self.scenes: Mapping[str, SceneRecord] = self.lock.scenes  # what apply has made so far
        # Every output file the lock named when the apply began: what sparkspec may replace.
        self.recorded = {(f.path, f.sha256) for r in ws.lock.scenes.values() for t in r.take_records().values()
                         for f in (t.video, t.last_frame)} | \
            {(s.video.path, s.video.sha256) for s in ws.lock.sequences.values()}
        self.sequences: Mapping[str, SequenceRecord] = self.lock.sequences

    def runner_emit(self, event: dict[str, Any]) -> None:
        if self.remote is not None:
            self.remote.observe(event)  # a submitted task's id goes into the remote claim
        self.emit(event)

    @property
    def stop_submitting(self) -> str | None:
        """Why new submissions stopped (Ctrl-C, a refused key, --fail-fast); the runner's flag,
        so a scene about to render and a render about to submit see the same one."""
        return self.runner.stop_submitting

    @stop_submitting.setter
    def stop_submitting(self, reason: str | None) -> None:
        self.runner.stop_submitting = reason

    # -- the walk -------------------------------------------------------------------------
    async def run(self) -> ApplyResult:
        self.tmp_dir.mkdir(parents=True, exist_ok=True)
        self.state_id = folder_id(self.workspace.state_dir)  # a state folder deleted meanwhile is noticed
        for leftover in self.tmp_dir.glob("*.part"):  # downloads of a killed apply (we hold the apply lock)
            leftover.unlink(missing_ok=True)
        await asyncio.to_thread(self.settle_journal)
        if self.remote is not None:
            await self.remote.start()
            if any(c.action is Action.PULL for c in self.plan.changes):
                from sparkspec.review.sheetid import sheet_digest

                # The lock as committed names what a clone is about to pull: its sheet too.
                digest = sheet_digest(self.project, self.workspace.lock)
                if digest is not None:
                    self.remote.expect_sheet(digest)
        if self.fetch_workers > 0:
            self.runner.workers = await self.start_workers()
        if self.early_workers is not None:  # those not taken (no file host, few renders): stopped now
            self.early_workers.discard()
        walked: BaseException | None = None
        try:
            await self.walk()
        except BaseException as exc:
            walked = exc
            raise
        finally:
            self.runner.journal_unrecorded()
            self.journal_vanished()
            try:
                self.lock.close()
                await asyncio.to_thread(rerolls.settle, self.workspace.state_dir, self.recorded_tasks())
            except (SparkspecError, OSError) as exc:  # the lock or the cache index: a full disk, say
                if exc is walked:  # a lock write the walk waited for failed: it is reported from there
                    raise
                message = str(DiskError.from_os(exc) if isinstance(exc, OSError) else exc)
                self.result.failed[message.split(":", 1)[0]] = message
                self.emit({"event": "failed", "error": message})
            self.runner.journal.close_log()
            if self.runner.workers is not None:
                await self.runner.workers.close()
        if self.remote is not None:
            self.sheet = await self.remote.settle_sheet()
        self.emit({"event": "done", "ok": self.result.ok, "completed": len(self.result.completed),
                   "failed": len(self.result.failed), "skipped": len(self.result.skipped),
                   "reused": len(self.result.reused), "restored": len(self.result.restored),
                   "pulled": len(self.result.pulled), "deleted": len(self.result.deleted), "stitched": len(self.result.stitched),
                   "tokens": self.result.tokens,
                   **({"collected": self.result.collected, "collected_tokens": self.result.collected_tokens}
                      if self.result.collected else {})})
        return self.result

    def journal_vanished(self) -> None:
        """`.sparkspec/` (or its journal) deleted while the apply ran: the entries of the tasks
        it still had running went with it, and the next apply would have paid for them again.
        They are written again, and the apply fails saying so (once)."""
        journal, state = self.runner.journal, self.workspace.state_dir
        lost = journal.vanished()
        moved = self.state_id is not None and folder_id(state) != self.state_id
        if not (lost or moved) or str(state) in self.result.failed:
            return
        try:
            running = journal.rewrite() if lost else []
            kept = (f"the {len(running)} task(s) it had not collected were journalled again, and the next apply "
                    "collects them at no new cost" if running else "no paid task of it was left to collect")
        except OSError as exc:
            kept = f"the tasks it had not collected could not be journalled again ({exc.strerror or exc})"
        message = f"{state} was deleted while the apply ran; {kept}; run `sparkspec apply` again"
        self.result.failed[str(state)] = message
        self.emit({"event": "failed", "error": message})

    def settle_journal(self) -> None:
        """With the apply lock held, before any create: the creates logs of killed applies become
        marks, and entries of tasks whose renders the cache's index holds go (an apply killed
        between the index's commit and the entries' forget left them; the cache vouches for
        those renders, and a task the plan collects keeps its entry). Their files are checked
        by size, not hashed: after a crash in a big apply's last batch there are thousands, and
        a render whose file is gone keeps its entry (its task can deliver it again)."""
        cache, journal = self.workspace.cache, self.runner.journal
        journal.settle_dead_logs(lambda key: cache.lookup(key) is not None)
        collecting = {c.key for c in self.plan.changes if c.action is Action.COLLECT}

        def indexed(key: str) -> bool:
            render = cache.entry(key)
            return render is not None and cache.has_blob(render.video_sha256, render.video_bytes) and \
                cache.has_blob(render.last_frame_sha256, render.last_frame_bytes)

        done = [key for key in sorted(journal.keys()) if key not in collecting and indexed(key)]
        if done:
            journal.forget_many(done)

    async def start_workers(self) -> FetchWorkers | None:
        """The fetch workers for this apply, when it has some and the provider offers them."""
        if self.fetch_workers <= 0 or not isinstance(self.provider, HasFileHost):
            return None
        settings = self.provider.file_host()
        if settings is None:
            return None
        from sparkspec.apply.workers import FetchWorkers

        workers = FetchWorkers(settings, self.fetch_workers)
        try:
            await workers.start(self.early_workers.take(self.fetch_workers) if self.early_workers else ())
        except OSError as exc:
            await workers.close()
            self.emit({"event": "warning", "message": f"could not start the fetch workers ({exc}); "
                                                      f"outputs are fetched by the apply itself"})
            return None
        return workers

    async def walk(self) -> None:
        loop = asyncio.get_running_loop()
        changes = self.plan.changes
        # Outputs about to move are copied into the cache first (a clone has them only in renders/).
        await asyncio.to_thread(adopt_moved, self.workspace, self.lock.scenes, changes)
        self.lock.withhold(self.changing_takes(),
                           [c.id for c in changes if c.kind == "sequence" and c.action is not Action.NOOP])
        scene_changes = [c for c in changes if c.kind == "scene" and c.action is not Action.DELETE]
        for change in scene_changes:
            self.done[change.render] = loop.create_future()
            self.installing.setdefault(change.id, asyncio.Lock())
        # Deletes first, right after their records left the file: a kill later in the apply
        # left a removed sequence's video in renders/, recorded nowhere, for good.
        if any(change.action is Action.DELETE for change in changes):
            await self.before_touching()
        for change in changes:
            if change.action is Action.DELETE:
                if change.kind == "scene":
                    self.delete_scene(change)
                else:
                    self.sequence_step(change, self.delete_sequence)
        tasks = [asyncio.create_task(self.scene_task(c), name=c.render) for c in scene_changes]
        try:
            await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                task.cancel()
        if any(change.kind == "sequence" and change.action is Action.STITCH for change in changes):
            await self.before_touching()
        for change in changes:
            if change.kind == "sequence" and change.action is not Action.DELETE:
                self.sequence_step(change, lambda _: self.sequence(change))

    def recorded_tasks(self) -> dict[str, set[str]]:
        """Key -> the task ids the lock records for it (every take)."""
        found: dict[str, set[str]] = {}
        for entry in self.lock.scenes.values():
            for take in entry.take_records().values():
                found.setdefault(take.key, set()).add(take.task_id)
        return found

    async def before_touching(self) -> None:
        """Before the first output changes: the records this apply may change leave the lock file
        (an apply killed while its first renders run leaves the lock as it was)."""
        written = self.lock.before_touching()
        if written is not None:
            await asyncio.wrap_future(written)

    def sequence_step(self, change: Change, step: Callable[[str], None]) -> None:
        """Stitch or delete one sequence; a failure fails it alone, the others go on."""
        try:
            step(change.id)
        except (SparkspecError, OSError) as exc:
            message = str(DiskError.from_os(exc) if isinstance(exc, OSError) else exc)
            self.result.failed[f"sequence {change.id}"] = message
            self.emit({"event": "failed", "sequence": change.id, "error": message})

    def changing_takes(self) -> list[tuple[str, int]]:
        """The recorded takes whose outputs this apply may overwrite, move or delete."""
        out: list[tuple[str, int]] = []
        for c in self.plan.changes:
            if c.kind != "scene":
                continue
            if c.action is Action.DELETE and c.id not in self.project.scenes:  # every take goes
                out += [(c.id, take) for take in self.lock.takes(c.id)]
            elif c.action not in KEEPS_RECORD and not (c.action is Action.PULL and self.pulls_recorded(c)):
                out.append((c.id, c.take))
            elif c.action is Action.RESTORE:
                # (A frame decoded again from its video is in the cache by now, `adopt_moved`: a
                # kill after this write leaves a render the next plan reuses.)
                record = self.take_record(c.id, c.take)
                wanted = output_paths(self.project, c.id, c.take, self.project.scenes[c.id].pick)[0]
                if record is not None and record.video.path != wanted:  # a new pick moves it
                    out.append((c.id, c.take))
        return out

    def pulls_recorded(self, change: Change) -> bool:
        """`change` pulls the very render the lock records for its take, into the files the
        record names: like a restore, each file appears whole (renamed into place) with the
        bytes the record says, so the record need not leave the file meanwhile. (A teammate's
        clone pulling its whole lock then rewrites no lock at all.)"""
        record = self.take_record(change.id, change.take)
        if record is None or self.remote is None or change.key != record.key:
            return False
        hit = self.remote.hits.get(record.key)
        return hit is not None and self.installs_as_recorded(self.project.scenes[change.id], change.take, record, hit)

    def picked(self, scene_id: str) -> str:
        """The render name of a scene's picked take (`hero`, `hero.take3`)."""
        pick = self.project.scenes[scene_id].pick
        return scene_id if pick == 1 else f"{scene_id}.take{pick}"

    def take_record(self, scene_id: str, take: int) -> SceneRecord | None:
        return self.lock.takes(scene_id).get(take)

    async def scene_task(self, change: Change) -> None:
        future = self.done[change.render]
        try:
            record = await self.scene(change)
        except asyncio.CancelledError:
            if not future.done():
                future.set_result(None)
            raise
        except SceneSkipped as exc:
            self.result.skipped[change.render] = str(exc)
            self.emit({"event": "skipped", "scene": change.render, "reason": str(exc)})
            record = None
        except (SceneFailed, SparkspecError, OSError) as exc:  # a damaged cache, a full disk: this scene
            message = str(DiskError.from_os(exc, self.project.root) if isinstance(exc, OSError) else exc)
            self.runner.failure(change.render, message)  # --fail-fast: whatever failed it, nothing more is submitted
            self.result.failed[change.render] = message
            self.emit({"event": "failed", "scene": change.render, "error": message})
            record = None
        if not future.done():
            future.set_result(record)

    async def scene(self, change: Change) -> SceneRecord | None:
        scene = self.project.scenes[change.id]
        if change.action is Action.NOOP:
            # Planned from the upstream's recorded last frame, which stays what it was whatever
            # becomes of the upstream's own change (a restore that fails): nothing to do or say.
            return self.take_record(scene.id, change.take)
        upstream: SceneRecord | None = None
        if scene.upstream is not None:
            picked = self.picked(scene.upstream)
            upstream = await self.done[picked] if picked in self.done else \
                self.take_record(scene.upstream, self.project.scenes[scene.upstream].pick)
            if upstream is None:
                raise SceneSkipped(f"upstream {picked} did not render")
        if change.key is None:
            # Known only after apply: the upstream's real last frame exists now, so the
            # planner's rule decides this scene as it would have with that frame in the lock.
            assert upstream is not None
            key = scene_key(self.project, scene, first_frame_input(sha256=upstream.frame_identity), change.take)
            planned = change
            change = decide(self.project, scene, key, self.take_record(scene.id, change.take), self.workspace.cache,
                            self.workspace.memo, forced=change.action is Action.REPLACE, same_as=change.same_as,
                            estimate=(change.estimated_tokens, change.estimated_cost), take=change.take,
                            tasks=Tasks(self.runner.journal, self.wall_clock())).change
            if change.action is Action.NOOP and planned.action is not Action.NOOP:
                # The plan could not know: say why a planned render did not happen.
                self.emit({"event": "progress", "scene": change.render, "state": "unchanged",
                           "reason": f"{picked}'s new last frame is the one it had, so its key is unchanged: "
                                     "nothing to render"})
        return await self.execute(scene, change, upstream)

    async def execute(self, scene: Scene, change: Change, upstream: SceneRecord | None) -> SceneRecord | None:
        """Carry out the change as planned; a world that no longer matches the plan fails it."""
        if change.action is Action.NOOP:
            return self.take_record(scene.id, change.take)
        key = change.scene_key
        if key is None or key.hex != change.key:
            raise AssertionError(f"{change.address}: a planned change without its key")
        if change.frame_from_video:
            record = self.take_record(scene.id, change.take)
            assert record is not None
            try:
                decoded = self.runner.cached(key.hex) or \
                    await asyncio.to_thread(adopt_decoding_frame, self.workspace.cache, self.workspace, record)
            except MediaError as exc:
                raise SceneFailed(f"its last frame cannot be decoded again from {record.video.path} ({exc}); "
                                  f"`sparkspec apply --replace {change.render}` renders it again") from None
            if decoded is None:
                raise SceneFailed(f"the plan is stale: run plan again ({record.video.path} changed since the plan)")
            return await self.installed(scene, change, decoded, "restored")
        if change.action in (Action.REUSE, Action.RESTORE):
            first = await self.done[change.same_as] if change.same_as is not None else None
            cached = self.own_render(scene.id, change) or self.runner.cached(key.hex)  # (after the scene it shares renders it)
            if cached is None and change.same_as is not None and first is None:
                raise SceneSkipped(f"scene {change.same_as}, whose render it shares, did not render")
            if cached is None:
                raise SceneFailed(f"the plan is stale: run plan again (the cached render {key.hex[:12]} "
                                  "it was to use is no longer in the cache)")
            return await self.installed(scene, change, cached,
                                        "restored" if change.action is Action.RESTORE else "reused")
        if change.action is Action.PULL:
            if self.remote is None:
                raise SceneFailed("the plan pulls from the team's remote, which is off in this apply; "
                                  "run plan again")
            pulled = await self.remote.pull(change.render, key.hex, thumbnail=change.take == scene.pick)
            return await self.installed(scene, change, pulled, "pulled")
        collect = change.action is Action.COLLECT  # submits nothing: goes on when submissions stop
        if self.stop_submitting is not None and not collect:
            raise SceneSkipped(self.stop_submitting)
        request = self.request(scene, key, self.first_frame(scene, key, upstream), change.render)
        url = request.first_frame.url if request.first_frame is not None else None
        if url is not None and url.startswith(("http://", "https://")) and self.runner.api.type == "local":
            self.emit({"event": "warning", "scene": change.render,
                       "message": f"the local provider renders offline and cannot fetch the first frame {url}; "
                                  "it starts from a seeded scene instead (the API would start from the image)"})
        unplanned = (change.unplanned_tokens, change.unplanned_cost) \
            if change.action in (Action.WAIT, Action.COLLECT) else None
        # --replace skips the cache: a render of the key not seen yet, afresh or (collect) the task
        # an interrupted --replace paid for.
        forced = change.action is Action.REPLACE or (collect and self.plan.options.replaces(change.id, change.take))
        cached, shared = await self.runner.obtain(key, request, fresh=forced,
                                                  collect=collect, unplanned=unplanned)
        if self.remote is not None and self.remote.took(key.hex):
            return await self.installed(scene, change, cached, "pulled")  # another machine rendered it meanwhile
        if shared:
            return await self.installed(scene, change, cached, "reused")
        self.result.tokens += cached.tokens  # paid, whether or not it can be put in place
        if forced:  # named until the lock records it: a --replace stopped before then installs it
            await asyncio.to_thread(rerolls.note, self.workspace.state_dir, key.hex, cached.task_id)
        if key.hex in self.runner.paid_before:
            self.result.collected += 1
            self.result.collected_tokens += cached.tokens
        try:
            record = await self.install(scene, change.take, cached)
        except (SparkspecError, OSError) as exc:
            message = str(DiskError.from_os(exc, self.project.root) if isinstance(exc, OSError) else exc)
            raise SceneFailed(f"{message} (the render, {cached.tokens:,} tokens, is paid for: the next apply "
                              "puts it in place at no new cost, from the cache, or from its task again if the "
                              "cache lost it)") from None
        self.result.completed.append(change.render)
        self.emit({"event": "completed", "scene": change.render, "key": key.hex, "task_id": cached.task_id,
                   "tokens": cached.tokens})
        if forced and self.remote is not None and self.remote.remote.writable:
            # A --replace render skipped the claims; its files are shared all the same (the
            # remote's write-once entry keeps naming the first render of the key), so a
            # teammate pulling the lock this apply writes gets this render, not the old one.
            await self.remote.push(change.render, cached)
        return record

    def own_render(self, scene_id: str, change: Change) -> CachedRender | None:
        """A restore's render as the lock records it, when both its files are in the cache's
        store (the plan restores that one, not whatever else the index holds for the key)."""
        entry = self.workspace.lock.scenes.get(scene_id) if change.action is Action.RESTORE else None
        own = entry.take_records().get(change.take) if entry is not None else None
        if own is None or own.key != change.key:
            return None
        cache = self.workspace.cache
        if not all(cache.has_blob(f.sha256, f.bytes) for f in (own.video, own.last_frame)):
            return None
        return render_of(own)

    async def installed(self, scene: Scene, change: Change, cached: CachedRender, verb: str) -> SceneRecord:
        record = await self.install(scene, change.take, cached)
        getattr(self.result, verb).append(change.render)
        self.emit({"event": verb, "scene": change.render, "key": cached.key})
        return record

    def first_frame(self, scene: Scene, key: SceneKey, upstream: SceneRecord | None) -> tuple[Path, str] | None:
        """The upstream's last frame to start from, as the key says, and the sha256 of its bytes;
        the plan is stale if the file no longer holds what the key was made of. None: not a
        chained scene."""
        memo = self.workspace.memo
        wanted = (key.inputs.get("first_frame") or {}).get("sha256")
        if upstream is None:
            image = scene.image
            if image is not None and image.path is not None and memo.sha256(image.path) != wanted:
                raise SceneFailed(f"the plan is stale: run plan again ({image.path} changed since the plan)")
            return None
        # The key names the render's own last frame; the file may be a stand-in decoded from the
        # upstream's video again (`rendered_frame_sha256`), which is what is sent.
        frame = upstream.last_frame
        local = self.project.root / frame.path
        if upstream.frame_identity == wanted and file_problem(memo, self.project.root, frame, frame.path) is None:
            return local, frame.sha256
        if upstream.frame_identity == wanted and self.workspace.cache.has_blob(frame.sha256, frame.bytes):
            return self.workspace.cache.blob_path(frame.sha256), frame.sha256
        raise SceneFailed(f"the plan is stale: run plan again ({frame.path} changed since the plan)")

    async def install(self, scene: Scene, take: int, cached: CachedRender) -> SceneRecord:
        """Cache -> renders/ (copied off the event loop) -> the lock's record; the takes of a
        scene one at a time, as they share the scene's top-level files."""
        async with self.installing[scene.id]:
            await self.before_touching()
            current = self.take_record(scene.id, take)
            if current is not None and not self.lock.withholds(scene.id, take) and \
                    not self.installs_as_recorded(scene, take, current, cached):
                self.lock.withhold_take(scene.id, take)  # not foreseen: before the files change
                await asyncio.to_thread(self.lock.settle)
            self.lock.touch("scene", scene.id, take)
            self.lock.touch_paths(scene.id, output_paths(self.project, scene.id, take, scene.pick))
            await asyncio.to_thread(self._materialize, scene, take, cached)
            record = self.record(scene, take, cached)
            old = self.lock.put_take(scene.id, take, record, scene.pick)
            if old is not None:
                for note in await asyncio.to_thread(self.remove_moved, scene.id, old):
                    # As a delete says it: a file altered by hand stays, under the take's old name.
                    self.emit({"event": "warning", "scene": scene.id if take == 1 else f"{scene.id}.take{take}",
                               "message": f"{note}; the lock no longer names it"})
        return record

    def installs_as_recorded(self, scene: Scene, take: int, record: SceneRecord, cached: CachedRender) -> bool:
        """Installing `cached` leaves each of the take's files as `record` names it."""
        paths = output_paths(self.project, scene.id, take, scene.pick)
        return paths == (record.video.path, record.last_frame.path) and \
            (cached.video_sha256, cached.last_frame_sha256) == (record.video.sha256, record.last_frame.sha256)

    def _materialize(self, scene: Scene, take: int, cached: CachedRender) -> None:
        cache, memo = self.workspace.cache, self.workspace.memo
        video, frame = output_paths(self.project, scene.id, take, scene.pick)
        for rel, sha, size in ((video, cached.video_sha256, cached.video_bytes),
                               (frame, cached.last_frame_sha256, cached.last_frame_bytes)):
            dest = self.project.root / rel
            there = memo.sha256(dest)
            if there != sha:
                if there is not None:
                    self._keep_if_not_ours({"scene": scene.id}, rel, dest, there)
                materialize(cache.blob_path(sha), dest, sha, size, shared=cache.fresh_pull(sha, size))
                memo.remember(dest, sha)

    def _keep_if_not_ours(self, subject: dict[str, str], rel: str, dest: Path, sha: str) -> None:
        """A file where an output goes that no lock recorded there and the cache does not hold (a
        user's own, another spec's in the same folder): moved to .sparkspec/displaced/ and named
        in a warning, never overwritten. sparkspec touches only its own outputs."""
        if (rel, sha) in self.recorded or self.workspace.cache.has_blob(sha, dest.stat().st_size):
            return
        if "sequence" in subject and sha in stitched(self.workspace.state_dir, rel):
            return  # sparkspec's own earlier stitch, whose record a killed apply had withheld
        kept = self.workspace.state_dir / "displaced" / f"{rel}.{sha[:12]}"
        kept.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.replace(dest, kept)
        except OSError:  # another file system: a copy, then the original goes
            atomic_copy(dest, kept)
            dest.unlink()
        why = ("was edited since the lock recorded it" if any(path == rel for path, _ in self.recorded)
               else "was not sparkspec's (no lock recorded it)")
        self.emit({"event": "warning", **subject,
                   "message": f"{rel} {why} and the cache does not hold those bytes: it was moved to "
                              f"{kept.relative_to(self.project.root)} before the "
                              f"{'render' if 'scene' in subject else 'stitched video'} took its place"})

    def record(self, scene: Scene, take: int, cached: CachedRender) -> SceneRecord:
        video, frame = output_paths(self.project, scene.id, take, scene.pick)
        return SceneRecord(
            key=cached.key, provider=cached.provider, model=cached.model, task_id=cached.task_id,
            seed=cached.seed, tokens=cached.tokens,
            video=FileRecord(video, cached.video_sha256, cached.video_bytes),
            last_frame=FileRecord(frame, cached.last_frame_sha256, cached.last_frame_bytes),
            inputs=cached.inputs, seed_derived=cached.seed_derived, cost=cached.cost,
            last_frame_extracted=cached.last_frame_extracted, take=take,
            rendered_frame_sha256=cached.rendered_frame_sha256)

    def remove_moved(self, scene_id: str, old: SceneRecord) -> list[str]:
        """A take's outputs left where they were (a new pick moved it): removed, unless a take
        of the scene is recorded there now. The old place may be renders/<scene>.mp4 of a
        picked take that failed: it must not go on showing this take."""
        named = {f.path for r in self.lock.takes(scene_id).values() for f in (r.video, r.last_frame)}
        # In an earlier output_dir: left there, and named once at the end of the apply (not a
        # warning a file, commands.apply._left_in_old_folders).
        return self.remove_outputs(*(f for f in (old.video, old.last_frame) if f.path not in named
                                     and in_output_folder(f.path, self.project.output_dir)))

    # -- what a render asks for -----------------------------------------------------------
    def request(self, scene: Scene, key: SceneKey, upstream_frame: tuple[Path, str] | None,
                name: str | None = None) -> RenderRequest:
        """`upstream_frame`: the file a chained scene starts from, and its bytes' sha256."""
        first: FirstFrame | None = None
        wanted = (key.inputs.get("first_frame") or {}).get("sha256")
        if upstream_frame is not None:
            first = FirstFrame(path=upstream_frame[0], sha256=upstream_frame[1])
        elif scene.image is not None:
            first = FirstFrame(path=scene.image.path, url=scene.image.url,
                               sha256=wanted if scene.image.path is not None else None)
        return RenderRequest(
            key=key.hex, scene=name or scene.id, model=self.project.provider.model, prompt=scene.prompt,
            resolution=scene.resolution, ratio=scene.ratio, duration=scene.duration, frames=scene.frames,
            seed=key.seed, camera_fixed=scene.camera_fixed, watermark=scene.watermark, first_frame=first,
            service_tier=scene.service_tier, execution_expires_after=scene.execution_expires_after,
            callback_url=scene.callback_url, seed_derived=key.seed_derived and key.seed != -1)

    # -- deletes and sequences ------------------------------------------------------------
    def delete_scene(self, change: Change) -> None:
        """A scene gone from the spec (every take), or one take dropped by a lower `takes`;
        their records are withheld from the file already."""
        scene = self.project.scenes.get(change.id)
        if scene is None:
            dropped = self.lock.drop_scene(change.id)
        else:
            record = self.lock.drop_take(change.id, change.take, scene.pick)
            dropped = [record] if record is not None else []
        kept = [note for r in dropped for note in self.remove_outputs(r.video, r.last_frame)]
        self.result.deleted.append(change.render)
        self.emit({"event": "deleted", "scene": change.render, **({"kept": kept} if kept else {})})

    def delete_sequence(self, name: str) -> None:
        record = self.lock.drop_sequence(name)
        kept = [] if record is None else self.remove_outputs(record.video)
        self.result.deleted.append(name)
        self.emit({"event": "deleted", "sequence": name, **({"kept": kept} if kept else {})})

    def remove_outputs(self, *files: FileRecord) -> list[str]:
        """Delete a dropped entry's files; say which were left (altered, or not in the folder)."""
        notes = [remove_output(self.project.root, self.project.output_dir, f, self.workspace.memo) for f in files]
        return [note for note in notes if note is not None]

    def sequence(self, change: Change) -> None:
        if change.action is not Action.STITCH:
            return
        members = self.project.sequences[change.id].scenes
        records = [self.take_record(m, self.project.scenes[m].pick) for m in members]
        missing = [self.picked(m) for m, r in zip(members, records) if r is None
                   or self.picked(m) in self.result.failed or self.picked(m) in self.result.skipped]
        if missing:
            reason = f"member {missing[0]} did not render"
            self.result.skipped[f"sequence {change.id}"] = reason
            self.emit({"event": "skipped", "sequence": change.id, "reason": reason})
            return
        present = [r for r in records if r is not None]
        root, memo = self.project.root, self.workspace.memo
        altered = next((p for p in (file_problem(memo, root, r.video, r.video.path) for r in present) if p), None)
        if altered is not None:
            reason = f"the plan is stale: run plan again ({altered} since the plan)"
            self.result.failed[f"sequence {change.id}"] = reason
            self.emit({"event": "failed", "sequence": change.id, "error": reason})
            return
        digests = tuple(r.video.sha256 for r in present)
        rel = sequence_path(self.project, change.id)
        old = self.sequences.get(change.id)
        if old is not None and old.members == digests and change.id not in self.plan.options.replace \
                and file_problem(memo, root, old.video, rel) is None:
            # Its members re-rendered to the very same videos (or were not rendered after all).
            self.emit({"event": "progress", "sequence": change.id, "state": "unchanged",
                       "reason": "its members' videos are the ones it was stitched from: nothing to stitch"})
            return
        from sparkspec.media.stitch import stitch

        dest = root / rel
        self.lock.touch("sequence", change.id)
        there = memo.sha256(dest)
        if there is not None:  # a user's own file, or the last stitch edited by hand: kept aside
            self._keep_if_not_ours({"sequence": change.id}, rel, dest, there)
        stitch([root / r.video.path for r in present], dest)
        digest = memo.sha256(dest)
        assert digest is not None
        remember_stitch(self.workspace.state_dir, rel, digest)
        self.lock.put_sequence(change.id, SequenceRecord(digests, FileRecord(rel, digest, dest.stat().st_size)))
        self.result.stitched.append(change.id)
        self.emit({"event": "stitched", "sequence": change.id})


def running_remotely(state_dir: Path) -> list[str]:
    """Journal entries: tasks submitted and not yet collected (the local provider's die with
    the apply, and the next one renders them again, at no cost)."""
    return [f"{e.scene} (task {e.task_id})" for e in Journal(state_dir / "journal").entries() if e.provider != "local"]


def sheet_scenes(project: Project) -> frozenset[str]:
    """The scenes renders/contact.png shows once they are all rendered: the first MAX_SCENES
    in graph order (review.model.scene_order). Their strips are made as their outputs arrive."""
    from sparkspec.review.contact import MAX_SCENES

    order = topological_order({sid: s.upstream for sid, s in project.scenes.items()})
    return frozenset(order[:MAX_SCENES])
