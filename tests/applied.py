"""A project left as a successful apply of its current spec leaves it, without rendering: outputs
in its output folder, blobs and index entries in the cache, a lock entry per scene (every take)
and sequence. What the files hold and what their records say is the caller's (`Render`)."""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from sparkspec import graph
from sparkspec.config.loader import LoadOptions
from sparkspec.config.model import Project
from sparkspec.fsutil import atomic_write_bytes
from sparkspec.keys import SceneKey, first_frame_input, scene_key
from sparkspec.plan.planner import image_identity, output_paths, sequence_path
from sparkspec.state.cache import Cache, CachedRender
from sparkspec.state.lockfile import FileRecord, Lock, SceneRecord, SequenceRecord, scene_entry, write_lock
from sparkspec.state.workspace import open_workspace

SPEC = "project.spark.yaml"


@dataclass(frozen=True)
class Render:
    video: bytes
    frame: bytes
    task_id: str
    tokens: int
    provider: str
    cost: float | None = None


# (project, scene id, its key, take) -> the render;
# (root, project, sequence name, its members' video sha256s) -> the sequence video's bytes
RenderOf = Callable[[Project, str, SceneKey, int], Render]
SequenceOf = Callable[[Path, Project, str, tuple[str, ...]], bytes]


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def leave_applied(root: Path, render_of: RenderOf, sequence_of: SequenceOf, *, cache: bool = True,
                  load: LoadOptions = LoadOptions()) -> Lock:
    workspace = open_workspace(root / SPEC, load)
    project = workspace.project
    upstreams = {sid: s.upstream for sid, s in project.scenes.items()}
    scenes: dict[str, SceneRecord] = {}
    last_frames: dict[str, str] = {}
    for sid in graph.topological_order(upstreams):
        scene = project.scenes[sid]
        first = (first_frame_input(sha256=last_frames[scene.upstream]) if scene.upstream
                 else image_identity(scene, workspace.memo))
        takes: dict[int, SceneRecord] = {}
        for take in range(1, scene.takes + 1):
            key = scene_key(project, scene, first, take)
            made = render_of(project, sid, key, take)
            video_path, frame_path = output_paths(project, sid, take, scene.pick)
            atomic_write_bytes(root / video_path, made.video)
            atomic_write_bytes(root / frame_path, made.frame)
            if cache:
                for data in (made.video, made.frame):
                    atomic_write_bytes(workspace.cache.blob_path(sha(data)), data)
                workspace.cache.record(CachedRender(
                    key=key.hex, provider=made.provider, model=project.provider.model, task_id=made.task_id,
                    seed=key.seed, tokens=made.tokens, video_sha256=sha(made.video), video_bytes=len(made.video),
                    last_frame_sha256=sha(made.frame), last_frame_bytes=len(made.frame), inputs=dict(key.inputs),
                    seed_derived=key.seed_derived, cost=made.cost))
            takes[take] = SceneRecord(
                key=key.hex, provider=made.provider, model=project.provider.model, task_id=made.task_id,
                seed=key.seed, tokens=made.tokens, video=FileRecord(video_path, sha(made.video), len(made.video)),
                last_frame=FileRecord(frame_path, sha(made.frame), len(made.frame)), inputs=dict(key.inputs),
                seed_derived=key.seed_derived, cost=made.cost)
        scenes[sid] = scene_entry(takes, scene.pick)
        last_frames[sid] = scenes[sid].last_frame.sha256
    sequences = {}
    for name, seq in project.sequences.items():
        members = tuple(scenes[m].video.sha256 for m in seq.scenes)
        data = sequence_of(root, project, name, members)
        path = sequence_path(project, name)
        atomic_write_bytes(root / path, data)
        sequences[name] = SequenceRecord(members, FileRecord(path, sha(data), len(data)))
    lock = Lock(scenes, sequences)
    write_lock(workspace.lock_path, lock)
    workspace.close()
    return lock


def cached_render(cache: Cache, tmp: Path, key: str | None = None, video: bytes | None = None,
                  frame: bytes | None = None) -> CachedRender:
    """A render in `cache` (blobs and index entry) with random bytes unless given."""
    shas = []
    for data in (video or secrets.token_bytes(3000), frame or secrets.token_bytes(200)):
        digest = sha(data)
        (tmp / digest).write_bytes(data)
        cache.put_blob(tmp / digest, digest)
        shas.append((digest, len(data)))
    render = CachedRender(key or secrets.token_hex(32), "local", "m", "t", 1, 0, shas[0][0], shas[0][1],
                          shas[1][0], shas[1][1], {})
    cache.record(render)
    return render
