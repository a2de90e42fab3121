"""Planning: spec + lock + cache -> what apply must do, and why. A pure value.

Scenes are walked upstream first. A scene's key needs its first frame's digest;
for a chained scene that is its upstream's last frame, known from the lock or
the cache unless the upstream renders in this apply, in which case the key is
known only after apply. `decide` is the one place a scene's action is chosen:
the planner calls it for every known key, and apply calls it for a key the plan
left unknown. `file_problem` is the one check of an output against its record.
Two scenes with one key render once: the second is `reuse` of the first. A render whose
task an earlier apply submitted (the journal) is `collect`: apply collects it, at no new cost.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, replace
from pathlib import Path

from sparkspec import apifacts, graph
from sparkspec.state.cache import Cache, CachedRender
from sparkspec.state.digests import DigestMemo
from sparkspec.errors import SparkspecError
from sparkspec.keys import SceneKey, first_frame_input, scene_key
from sparkspec.state.lockfile import FileRecord, Lock, SceneRecord
from sparkspec.plan.collect import Tasks, journalled, taken_over
from sparkspec.plan.model import Action, Change, Plan, PlanOptions, RemoteView
from sparkspec.plan.reasons import why_changed
from sparkspec.config.model import Project, Scene
from sparkspec.config.values import TAKE_ID


def output_paths(project: Project, scene_id: str, take: int = 1, pick: int = 1) -> tuple[str, str]:
    """Where a take's video and last frame go: the picked take is the scene's."""
    stem = scene_id if take == pick else f"{scene_id}.take{take}"
    return _output(project, f"{stem}.mp4"), _output(project, f"{stem}.last.png")


def sequence_path(project: Project, name: str) -> str:
    return _output(project, f"{name}.mp4")


def _output(project: Project, name: str) -> str:
    base = project.output_dir.rstrip("/")
    return name if base in ("", ".") else f"{base}/{name}"


def image_identity(scene: Scene, memo: DigestMemo) -> dict[str, str] | None:
    image = scene.image
    if image is None:
        return None
    if image.path is not None:
        return first_frame_input(sha256=memo.sha256(image.path))
    assert image.url is not None
    if image.url.startswith("data:"):
        data = base64.b64decode(image.url.split(",", 1)[1])
        return first_frame_input(sha256=hashlib.sha256(data).hexdigest())
    return first_frame_input(url=image.url)




def take_of(project: Project, wanted: str) -> tuple[str, int] | None:
    """(scene, take) when `wanted` names a take of a scene of the project (`intro.take2`)."""
    match = TAKE_ID.fullmatch(wanted)
    if match is None or match["scene"] not in project.scenes:
        return None
    return match["scene"], int(match["take"])


def check_ids(project: Project, options: PlanOptions, removed: Collection[str] = ()) -> None:
    """`removed`: ids the lock records that the spec no longer has, which --target may name
    (to delete that one, as terraform destroys a resource removed from its configuration)."""
    known = set(project.scenes) | set(project.sequences)
    kinds = {(flag, name): kind for flag, kind, name in options.addressed}
    for flag, ids in (("--target", options.targets), ("--replace", options.replace)):
        for wanted in ids:
            if wanted in known or (flag == "--target" and wanted in removed):
                continue
            shown = f"{kinds[flag, wanted]}.{wanted}" if (flag, wanted) in kinds else wanted  # as typed
            take = take_of(project, wanted)
            if take is not None:
                sid, number = take
                if flag == "--target":
                    raise SparkspecError(f"--target {shown}: a target is a scene or a sequence, not one take; "
                                         f"--target {sid} selects every take of {sid}, and "
                                         f"--replace {shown} renders that take again")
                takes = project.scenes[sid].takes
                if 1 <= number <= takes:
                    continue
                raise SparkspecError(f"--replace {shown}: {sid} has {takes} take{'s' if takes != 1 else ''}"
                                     f"{f' (take1 to take{takes})' if takes > 1 else ''}")
            expansions = [s.id for s in project.scenes.values() if s.source_id == wanted and s.id != wanted]
            if expansions:
                raise SparkspecError(f"{flag} {shown}: {wanted} is a matrix scene; name one of its expansions: "
                                     f"{', '.join(expansions)}")
            raise SparkspecError(f"{flag} {shown}: no scene or sequence of that id in "
                                 f"{project.display_path}; see `sparkspec graph`")
    for flag, kind, wanted in options.addressed:
        if (kind == "scene" and take_of(project, wanted) is not None) or (flag == "--target" and wanted in removed):
            continue
        if wanted not in (project.scenes if kind == "scene" else project.sequences):
            other = "sequence" if kind == "scene" else "scene"
            raise SparkspecError(f"{flag} {kind}.{wanted}: {wanted} is a {other}, not a {kind}, in "
                                 f"{project.display_path}; did you mean {other}.{wanted}?")


def check_replaced_are_selected(options: PlanOptions, scenes: Collection[str], sequences: Collection[str]) -> None:
    """With --target, a --replace id outside what the targets select would be ignored: refused."""
    for wanted in options.replace:
        base = TAKE_ID.fullmatch(wanted)
        if wanted not in scenes and wanted not in sequences and (base is None or base["scene"] not in scenes):
            raise SparkspecError(f"--replace {wanted}: not among what --target {' '.join(options.targets)} "
                                 f"selects (the targets and their upstreams), so it would not be replaced; "
                                 f"add --target {wanted}")


def file_problem(memo: DigestMemo, root: Path, record: FileRecord, wanted_path: str) -> str | None:
    """Why an output is not as its record says (or not where the spec wants it), or None:
    the one check of an output, for plan and apply alike."""
    if record.path != wanted_path:
        return f"{wanted_path} is not materialised yet"
    digest = memo.sha256_under(root, record.path)
    if digest is None:
        return f"{record.path} is missing"
    if digest != record.sha256:
        return f"{record.path} was altered"
    return None


@dataclass(frozen=True)
class Decision:
    """A scene's change, and its outputs' digests when they are known before apply runs: the
    video's, and the render's own last frame's (`frame_identity`: what chained scenes are keyed
    by, whether renders/ holds that frame or a stand-in decoded from the video)."""

    change: Change
    video: str | None = None
    last_frame: str | None = None


def _own_blobs(cache: Cache, record: SceneRecord) -> set[str]:
    """What the cache's store holds of the files `record` names: {"ok"} when both are there at
    their size and sha256; "missing" or "damaged" (dropped) for the others."""
    return {cache.verify_blob(f.sha256, f.bytes) for f in (record.video, record.last_frame)}


def decide(project: Project, scene: Scene, key: SceneKey, record: SceneRecord | None, cache: Cache,
           memo: DigestMemo, *, forced: bool = False, same_as: str | None = None,
           estimate: tuple[int, float | None] = (0, None), take: int = 1, moved: str | None = None,
           remote: RemoteView | None = None, placed: Callable[[str], SceneRecord | None] | None = None,
           tasks: Tasks | None = None) -> Decision:
    """What to do for take `take` of `scene` (its own record in `record`) whose key is known:
    the one place an action is chosen. `same_as` names an earlier render of this key in the
    same apply; `moved` says why a take's outputs move (`pick: 1 -> 3`); `remote` is asked
    about a render the local cache cannot serve; `placed` finds a render of a key that the lock
    records in place for some scene or take (a clone, or a cache cleared), which apply adopts
    into the cache instead of paying for it again; `tasks` is the journal, whose tasks apply
    collects instead of submitting."""
    tokens, cost = estimate
    provider = project.provider.type
    problem = None
    if record is not None and record.key == key.hex:
        video_path, frame_path = output_paths(project, scene.id, take, scene.pick)
        problem = file_problem(memo, project.root, record.video, video_path) or \
            file_problem(memo, project.root, record.last_frame, frame_path)
        if problem is not None and moved is not None and record.video.path != video_path:
            problem = moved
        if problem is None and not forced:
            return Decision(Change("scene", scene.id, Action.NOOP, (), key.hex, scene_key=key, take=take),
                            record.video.sha256, record.frame_identity)
    if same_as is not None:
        reasons = why_changed(record, key) if record is not None and record.key != key.hex else []
        return Decision(Change("scene", scene.id, Action.REUSE, tuple(reasons + [f"same render as scene.{same_as}"]),
                               key.hex, same_as=same_as, scene_key=key, take=take))
    if forced:
        # What would have changed anyway is said too, as terraform shows the diff beside
        # "forces replacement"; and that the render it replaces is one --replace pays for again.
        reasons = ["forced by --replace"]
        rerolled = _reroll(cache, record, key, tasks)
        if rerolled is not None:
            return Decision(Change("scene", scene.id, Action.REUSE, tuple(reasons + [
                "a render of this key that is not the lock's is in the cache (an earlier --replace, stopped "
                "before it was put in place): installed at no new cost"]), key.hex, scene_key=key, take=take),
                rerolled.video_sha256, rerolled.frame_identity)
        if record is None or record.key != key.hex:
            reasons += why_changed(record, key) if record is not None else []
            if cache.lookup(key.hex) is not None:
                reasons.append("its render is in the cache (without --replace it would be reused, free)")
        return Decision(journalled(Change("scene", scene.id, Action.REPLACE, tuple(reasons), key.hex,
                                          tokens, cost, scene_key=key, take=take), tasks, provider))
    own = _own_blobs(cache, record) if record is not None and problem is not None else set()
    if record is not None and problem is not None and own == {"ok"}:
        # The lock's own render is in the cache's store: that one comes back, whatever the
        # cache's index holds for the key now (a re-roll by --replace in a checkout sharing the
        # cache, or by a twin scene of the same inputs): a restore never swaps in another render,
        # which would change the first frame of the scenes chained after it. Apply indexes the
        # files again if the index lost them.
        indexed = cache.lookup(key.hex) is not None
        return Decision(Change("scene", scene.id, Action.RESTORE,
                               (problem if indexed else f"{problem}; its files are in the cache",),
                               key.hex, scene_key=key, take=take), record.video.sha256, record.frame_identity)
    if record is not None and problem is not None:
        cached, damage = cache.probe(key.hex)
        damage = damage or ("cached copy damaged" if "damaged" in own else None)
        if cached is not None and cached.video_sha256 != record.video.sha256 and remote is not None:
            # This cache holds another render of the key than the lock's (a teammate's --replace
            # re-roll, committed): the lock's own comes from the team's remote when its files are
            # there, rather than the other render being installed and the lock rewritten to it.
            hit = remote.entry(key.hex)
            if hit is not None and (hit.video_sha256, hit.last_frame_sha256) == \
                    (record.video.sha256, record.last_frame.sha256):
                return Decision(Change("scene", scene.id, Action.PULL,
                                       (problem, "the lock's render is on the team's remote; this cache holds "
                                                 "another render of the key"), key.hex, scene_key=key, take=take),
                                hit.video_sha256, hit.frame_identity)
        if cached is not None or (problem == moved and _in_place(project, memo, record)):
            # A moved take not cached here (a clone) is adopted from where the lock has it.
            # What is installed is the cache's render: its last frame may not be the record's (a
            # frame decoded again from the video by an apply cut short before its lock write).
            return Decision(Change("scene", scene.id, Action.RESTORE, (problem,), key.hex, scene_key=key, take=take),
                            *((cached.video_sha256, cached.frame_identity) if cached is not None
                              else (record.video.sha256, record.frame_identity)))
        found = placed(key.hex) if placed is not None else None
        if found is not None:  # the same render, in place for another scene: adopted by apply
            return Decision(Change("scene", scene.id, Action.RESTORE, (f"{problem}; the same render is {found.video.path}",),
                                   key.hex, scene_key=key, take=take), found.video.sha256, found.frame_identity)
        decision = _elsewhere(journalled(Change("scene", scene.id, Action.UPDATE,
                                                (f"{problem} and {damage or 'not in the cache'}",), key.hex, tokens,
                                                cost, scene_key=key, take=take), tasks, provider), remote, tasks)
        if decision.change.action is Action.UPDATE and (lost := _frame_lost(project, memo, record)) is not None:
            # The video is where the lock records it, as recorded: its last frame is decoded from
            # it again, free, where rendering it again would pay for a video already paid for
            # (before any take moves: apply.adopt.adopt_moved). The frame's bytes are known after
            # apply (the task's own image may not be the decoded one).
            why = problem if problem == lost else f"{problem}; {lost}"
            return Decision(Change("scene", scene.id, Action.RESTORE,
                                   (f"{why} and not in the cache: decoded again from {record.video.path}",),
                                   key.hex, scene_key=key, take=take, frame_from_video=True),
                            record.video.sha256, record.frame_identity)
        return decision
    cached, damage = cache.probe(key.hex)
    found = placed(key.hex) if cached is None and placed is not None else None
    if found is not None:  # not cached here, but in place for another scene: adopted by apply
        reasons = why_changed(record, key) if record else []
        return Decision(Change("scene", scene.id, Action.REUSE, tuple(reasons + [f"already rendered: {found.video.path}"]),
                               key.hex, scene_key=key, take=take), found.video.sha256, found.frame_identity)
    if damage is not None:  # a damaged blob was dropped: render it afresh
        reasons = (why_changed(record, key) if record else []) + [damage]
        return Decision(journalled(Change("scene", scene.id, Action.UPDATE if record else Action.CREATE,
                                          tuple(reasons), key.hex, tokens, cost, scene_key=key, take=take),
                                   tasks, provider))
    if cached is not None:
        reasons = why_changed(record, key) if record else []
        return Decision(Change("scene", scene.id, Action.REUSE, tuple(reasons + ["already rendered: in the cache"]),
                               key.hex, scene_key=key, take=take), cached.video_sha256, cached.frame_identity)
    if record is not None:
        return _elsewhere(journalled(Change("scene", scene.id, Action.UPDATE, tuple(why_changed(record, key)),
                                            key.hex, tokens, cost, scene_key=key, take=take), tasks, provider),
                          remote, tasks)
    return _elsewhere(journalled(Change("scene", scene.id, Action.CREATE, (), key.hex, tokens, cost, scene_key=key,
                                        take=take), tasks, provider), remote, tasks)

def _reroll(cache: Cache, record: SceneRecord | None, key: SceneKey, tasks: Tasks | None) -> CachedRender | None:
    """A render of the key in the cache that the lock does not record and that is new: the
    re-roll an earlier --replace paid for and was stopped before it put in place (named in
    `tasks.rerolls`, even when the stopped apply had withheld the scene's record), or another
    render of the lock's key (a twin scene's). What a --replace asks for, at no new cost."""
    cached = cache.lookup(key.hex)
    if cached is None:
        return None
    if tasks is not None and tasks.rerolls.get(key.hex) == cached.task_id:
        return cached if record is None or record.task_id != cached.task_id else None
    if record is None or record.key != key.hex:
        return None
    return cached if cached.video_sha256 != record.video.sha256 else None


def _in_place(project: Project, memo: DigestMemo, record: SceneRecord) -> bool:
    """Both of a record's files are where and as the lock says."""
    return all(file_problem(memo, project.root, f, f.path) is None for f in (record.video, record.last_frame))


def _frame_lost(project: Project, memo: DigestMemo, record: SceneRecord) -> str | None:
    """What is wrong with the take's last frame where the lock records it, when its video there
    is as recorded; None otherwise (the video too, or nothing)."""
    if file_problem(memo, project.root, record.video, record.video.path) is not None:
        return None
    return file_problem(memo, project.root, record.last_frame, record.last_frame.path)


def _elsewhere(change: Change, remote: RemoteView | None, tasks: Tasks | None = None) -> Decision:
    """A render the local cache cannot serve: pulled when the team's remote has it (its entry
    names both outputs, so scenes chained after it have keys now), awaited when another
    machine renders it, else rendered here (or collected from the journal: ours, paid)."""
    if remote is None or change.key is None or not change.action.renders:
        return Decision(change)
    hit = remote.entry(change.key)
    if hit is not None:
        return Decision(replace(change, action=Action.PULL, reasons=change.reasons + ("on the team's remote",),
                                estimated_tokens=0, estimated_cost=None), hit.video_sha256, hit.frame_identity)
    claim = remote.claim(change.key)
    if claim is not None:
        return Decision(replace(change, action=Action.WAIT, reasons=change.reasons + (claim,),
                                estimated_tokens=0, estimated_cost=None,
                                unplanned_tokens=change.estimated_tokens, unplanned_cost=change.estimated_cost))
    left = remote.abandoned(change.key)
    if left is not None:  # a crashed apply's claim on this machine: apply takes it over at once
        return Decision(taken_over(change, *left, tasks))
    return Decision(change)


class _Planner:
    def __init__(self, project: Project, lock: Lock, cache: Cache, memo: DigestMemo,
                 options: PlanOptions, remote: RemoteView | None = None, tasks: Tasks | None = None) -> None:
        self.project = project
        self.tasks = tasks
        self._journal_by_scene: dict[str, str] | None = None  # read once, when a key is unknown
        self.remote = remote
        self.lock = lock
        self.cache = cache
        self.memo = memo
        self.options = options
        self.last_frames: dict[str, str | None] = {}  # None: re-renders in this apply
        self.videos: dict[str, str | None] = {}
        self.ratios: dict[str, tuple[int, int]] = {}  # pixel size, for estimates
        self.rendering: dict[str, str] = {}  # key -> the first scene that renders it in this apply
        self.render_ids: dict[str, str] = {}  # scene -> its key, or what will make its key
        self.pick_changes: dict[str, str] = {}  # scene -> "pick: 1 -> 3"
        self.actions: dict[str, Action] = {}  # scene -> its picked take's action (known keys only)
        self.by_key: dict[str, list[SceneRecord]] | None = None  # the lock's takes by key, when asked

    def placed(self, key: str) -> SceneRecord | None:
        """A take the lock records with this key whose files are where and as it says."""
        if self.by_key is None:
            self.by_key = {}
            for entry in self.lock.scenes.values():
                for take in entry.take_records().values():
                    self.by_key.setdefault(take.key, []).append(take)
        return next((r for r in self.by_key.get(key, []) if _in_place(self.project, self.memo, r)), None)

    def size(self, scene: Scene) -> tuple[int, int]:
        ratio = scene.ratio
        if ratio == "adaptive":
            if scene.image is not None and scene.image.width and scene.image.height:
                ratio = apifacts.nearest_ratio(scene.image.width, scene.image.height)
            elif scene.upstream is not None and scene.upstream in self.ratios:
                w, h = self.ratios[scene.upstream]
                ratio = apifacts.nearest_ratio(w, h)
            else:
                # An image only the API sees (an https URL): its ratio is not known here, so the
                # estimate takes the largest frame of the resolution, never one below the bill.
                ratio = apifacts.largest_ratio(scene.resolution)
        size = apifacts.pixel_size(scene.resolution, ratio)
        self.ratios[scene.id] = size
        return size

    def estimate(self, scene: Scene) -> tuple[int, float | None]:
        width, height = self.size(scene)
        tokens = apifacts.estimate_tokens(width, height, apifacts.frame_count(scene.duration, scene.frames))
        price = self.project.provider.price_per_million_tokens
        if price is None:
            return tokens, None
        return tokens, apifacts.tokens_cost(tokens, price, scene.service_tier)

    def plan_scene(self, scene: Scene, only: Collection[int] | None = None) -> list[Change]:
        """One change per take (take 1 first), and a delete for each recorded take dropped.
        `only`: these takes and no others (a scene --target selects only as an upstream)."""
        numbers = [t for t in range(1, scene.takes + 1) if only is None or t in only]
        record = self.lock.scenes.get(scene.id)
        recorded = record.take_records() if record is not None else {}
        if record is not None and record.pick != scene.pick:
            self.pick_changes[scene.id] = f"pick: {record.pick} -> {scene.pick}"
        upstream = scene.upstream
        estimate = self.estimate(scene)
        if upstream is not None and self.last_frames.get(upstream) is None:
            self.last_frames[scene.id] = self.videos[scene.id] = None
            changes = [self.plan_unknown(scene, take, recorded.get(take),
                                         self.options.replaces(scene.id, take), estimate)
                       for take in numbers]
        else:
            if upstream is not None:
                first = first_frame_input(sha256=self.last_frames[upstream])
            else:
                first = image_identity(scene, self.memo)
            changes = []
            for take in numbers:
                key = scene_key(self.project, scene, first, take)
                if take == scene.pick:  # what chained scenes start from
                    self.render_ids[scene.id] = key.hex
                decision = decide(self.project, scene, key, recorded.get(take), self.cache, self.memo,
                                  forced=self.options.replaces(scene.id, take), same_as=self.rendering.get(key.hex), estimate=estimate,
                                  take=take, moved=self.pick_changes.get(scene.id), remote=self.remote,
                                  placed=self.placed, tasks=self.tasks)
                change = decision.change
                before = recorded.get(take)
                if before is not None and before.inputs.get("prompt") != key.inputs.get("prompt"):
                    change = replace(change, prompts=(str(before.inputs.get("prompt", "")),
                                                      str(key.inputs.get("prompt", ""))))
                if change.action.renders or change.action is Action.COLLECT:
                    self.rendering[key.hex] = change.render
                if upstream in self.pick_changes:
                    why = f"upstream {upstream} {self.pick_changes[upstream]}"
                    change = replace(change, reasons=tuple(why if r == "first frame changed" else r
                                                           for r in change.reasons))
                if take == scene.pick:
                    self.last_frames[scene.id], self.videos[scene.id] = decision.last_frame, decision.video
                    self.actions[scene.id] = change.action
                changes.append(change)
        changes += [Change("scene", scene.id, Action.DELETE, (f"takes lowered to {scene.takes}",),
                           recorded[take].key, take=take)
                    for take in sorted(recorded) if take > scene.takes and (only is None or take in only)]
        return changes

    def plan_unknown(self, scene: Scene, take: int, record: SceneRecord | None, forced: bool,
                     estimate: tuple[int, float | None]) -> Change:
        """A take whose key waits for its upstream's render in this apply."""
        partial = scene_key(self.project, scene, None, take)
        upstream = str(scene.upstream)
        # Its key is unknown, but two such takes made alike from one render share it.
        render = hashlib.sha256(f"{partial.hex}:{self.render_ids[upstream]}".encode()).hexdigest()
        if take == scene.pick:
            self.render_ids[scene.id] = render
        same_as = self.rendering.get(render)
        if same_as is not None:
            return Change("scene", scene.id, Action.REUSE, (f"same render as scene.{same_as}",), None,
                          same_as=same_as, take=take)
        change = Change("scene", scene.id, Action.CREATE, (), None, *estimate, take=take)
        self.rendering[render] = change.render
        reasons = [f"upstream {upstream} {self.how_made(upstream)}"]
        if record is not None:
            # The upstream explains the new key; list only what else changed.
            reasons += [r for r in why_changed(record, partial, skip=("first_frame",)) if r != "key changed"]
        action = Action.REPLACE if forced else Action.UPDATE if record else Action.CREATE
        task = self.journalled_for(change.render) if not forced else None
        if task is not None:
            # Its key waits for the upstream: if it comes out as the journalled task's, apply
            # collects that task (paid then) instead of paying; counted here as if it did not.
            reasons.append(f"task {task} of an earlier apply for it is in the journal: collected at no new "
                           "cost if its key is unchanged")
        return replace(change, action=action, reasons=tuple(reasons))

    def journalled_for(self, render: str) -> str | None:
        """The task id an earlier apply journalled for `render` (a scene or scene.takeK), if any."""
        if self.tasks is None:
            return None
        if self._journal_by_scene is None:
            self._journal_by_scene = {e.scene: e.task_id for e in self.tasks.journal.entries()}
        return self._journal_by_scene.get(render)

    def how_placed(self, scene: str) -> str:
        """How a member whose video is known at plan time comes to be another than the last
        stitch's."""
        action = self.actions.get(scene, Action.NOOP)
        if action is Action.REUSE:
            return "is reused from the cache"
        if action is Action.NOOP:
            return "changed since the last stitch"
        return self.how_made(scene)

    def how_made(self, scene: str) -> str:
        """How a scene whose video this apply makes gets it: 'upstream X re-renders' or 'member X
        re-renders' would read as a payment where the render was paid for already."""
        return {Action.WAIT: "is being rendered on another machine", Action.COLLECT: "is collected from its task",
                Action.RESTORE: "has its last frame decoded again from its video",
                Action.PULL: "is pulled from the team's remote"}.get(self.actions.get(scene, Action.UPDATE), "re-renders")

    def plan_sequence(self, name: str, members: tuple[str, ...]) -> Change:
        record = self.lock.sequences.get(name)
        if name in self.options.replace:
            return Change("sequence", name, Action.STITCH, ("forced by --replace",))
        picked = tuple(f"member {m} {self.pick_changes[m]}" for m in dict.fromkeys(members) if m in self.pick_changes)
        changed = [m for m in dict.fromkeys(members) if self.videos.get(m) is None]
        # Members whose video is known and is in no place of the last stitch: reused from the
        # cache, pulled, or rendered by an apply that did not stitch (a --target one).
        stitched = set(record.members) if record is not None else set()
        since = tuple(f"member {m} {self.how_placed(m)}" for m in dict.fromkeys(members)
                      if record is not None and m not in changed and m not in self.pick_changes
                      and str(self.videos.get(m)) not in stitched)
        if changed:
            return Change("sequence", name, Action.STITCH,
                          picked + since + tuple(f"member {m} {self.how_made(m)}" for m in changed))
        digests = tuple(str(self.videos[m]) for m in members)
        if record is None:
            return Change("sequence", name, Action.STITCH, ("new sequence",))
        if record.members != digests:
            return Change("sequence", name, Action.STITCH, picked + since or ("its members changed",))
        problem = file_problem(self.memo, self.project.root, record.video, sequence_path(self.project, name))
        if problem is not None:
            return Change("sequence", name, Action.STITCH, (problem,))
        return Change("sequence", name, Action.NOOP)


def _takes_needed(project: Project, lock: Lock, sid: str, options: PlanOptions) -> set[int] | None:
    """The takes of scene `sid` a targeted plan covers: every take of a scene it selects (as a
    target or a sequence's member); of one it selects only as an upstream, the picked take (what
    the scenes chained after it start from), the take picked before (a new pick moves its files
    away from renders/<scene>.mp4, and its record with them; or deletes them, when `takes` fell
    below it) and any take --replace names.
    None: every take."""
    if not options.targets or sid in options.targets or sid in options.replace or any(
            sid in project.sequences[name].scenes for name in options.targets if name in project.sequences):
        return None
    named = {take[1] for wanted in options.replace if (take := take_of(project, wanted)) is not None and take[0] == sid}
    recorded = lock.scenes.get(sid)
    before = {recorded.pick} if recorded is not None else set()
    return {project.scenes[sid].pick} | before | named


def plan_changes(project: Project, lock: Lock, cache: Cache, memo: DigestMemo,
                 options: PlanOptions = PlanOptions(), fingerprint: Mapping[str, str] | None = None,
                 remote: RemoteView | None = None, tasks: Tasks | None = None) -> Plan:
    """`tasks`: the journal, whose tasks apply collects (None: as if it were empty)."""
    gone = [sid for sid in lock.scenes if sid not in project.scenes]
    gone_sequences = [name for name in lock.sequences if name not in project.sequences]
    check_ids(project, options, [*gone, *gone_sequences])
    upstreams = {sid: s.upstream for sid, s in project.scenes.items()}
    sequences = project.sequences
    if options.targets:
        wanted = [t for t in options.targets if t in project.scenes]
        for name in options.targets:
            if name in sequences:
                wanted.extend(sequences[name].scenes)
        selected: Collection[str] = graph.with_upstreams(wanted, upstreams)
        sequences = {n: s for n, s in sequences.items()
                     if n in options.targets or (set(s.scenes) <= set(selected) and set(s.scenes) & set(options.targets))}
        check_replaced_are_selected(options, selected, sequences)
    else:
        selected = project.scenes
    planner = _Planner(project, lock, cache, memo, options, remote, tasks)
    changes = [change for sid in graph.topological_order(upstreams) if sid in selected
               for change in planner.plan_scene(project.scenes[sid], _takes_needed(project, lock, sid, options))]
    # A targeted plan deletes only what it names among the ids the spec no longer has.
    changes += [Change("scene", sid, Action.DELETE, ("not in the spec",), lock.scenes[sid].key)
                for sid in gone if not options.targets or sid in options.targets]
    changes += [planner.plan_sequence(name, seq.scenes) for name, seq in sequences.items()]
    changes += [Change("sequence", name, Action.DELETE, ("not in the spec",))
                for name in gone_sequences if not options.targets or name in options.targets]
    return Plan(tuple(changes), options, dict(fingerprint or {}),
                priced=project.provider.price_per_million_tokens is not None)
