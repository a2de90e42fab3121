"""A project left as an apply leaves it, with real (tiny) clips: outputs in renders/, blobs and
entries in the cache, the lock. Rendering is skipped; everything the review reads is real."""

from __future__ import annotations

import hashlib
from pathlib import Path

import av
from PIL import Image

from sparkspec import graph
from sparkspec.fsutil import atomic_write_bytes
from sparkspec.keys import first_frame_input, scene_key
from sparkspec.plan.planner import image_identity, output_paths, sequence_path
from sparkspec.state.cache import CachedRender
from sparkspec.state.lockfile import FileRecord, Lock, SceneRecord, SequenceRecord, write_lock
from sparkspec.state.workspace import Workspace, open_workspace

SPEC = "project.spark.yaml"
FRAMES = 24


def frame_color(base: int, index: int) -> tuple[int, int, int]:
    return ((base * 70 + index * 9) % 256, (base * 130 + 60) % 256, 200 - index * 8)


def clip_bytes(path: Path, base: int) -> bytes:
    """A 1 s 160x90 clip whose frame i is a solid frame_color(base, i)."""
    with av.open(str(path), mode="w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=24, options={"preset": "ultrafast", "threads": "1"})
        stream.width, stream.height, stream.pix_fmt = 160, 90, "yuv420p"
        for index in range(FRAMES):
            frame = av.VideoFrame.from_image(Image.new("RGB", (160, 90), frame_color(base, index)))
            frame.pts = index
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return path.read_bytes()


def png_bytes(path: Path, color: tuple[int, int, int]) -> bytes:
    Image.new("RGB", (160, 90), color).save(path, format="PNG")
    return path.read_bytes()


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def settle(root: Path, scratch: Path, bases: dict[str, int]) -> Lock:
    """Leave the project as a successful apply of its current spec: scene s's clip is coloured
    by bases[s] (change it to make a new render)."""
    workspace = open_workspace(root / SPEC)
    project = workspace.project
    upstreams = {sid: s.upstream for sid, s in project.scenes.items()}
    scenes: dict[str, SceneRecord] = {}
    last_frames: dict[str, str] = {}
    scratch.mkdir(parents=True, exist_ok=True)
    for sid in graph.topological_order(upstreams):
        scene = project.scenes[sid]
        first = (first_frame_input(sha256=last_frames[scene.upstream]) if scene.upstream
                 else image_identity(scene, workspace.memo))
        key = scene_key(project, scene, first)
        video = clip_bytes(scratch / f"{sid}-{bases[sid]}.mp4", bases[sid])
        frame = png_bytes(scratch / f"{sid}-{bases[sid]}.png", frame_color(bases[sid], FRAMES - 1))
        video_path, frame_path = output_paths(project, sid)
        atomic_write_bytes(root / video_path, video)
        atomic_write_bytes(root / frame_path, frame)
        for data in (video, frame):
            atomic_write_bytes(workspace.cache.blob_path(_sha(data)), data)
        cached = CachedRender(key=key.hex, provider="local", model=project.provider.model,
                              task_id=f"task-{sid}-{bases[sid]}", seed=key.seed, tokens=1000 + bases[sid],
                              video_sha256=_sha(video), video_bytes=len(video), last_frame_sha256=_sha(frame),
                              last_frame_bytes=len(frame), inputs=dict(key.inputs), seed_derived=key.seed_derived,
                              cost=0.5)
        workspace.cache.record(cached)
        scenes[sid] = SceneRecord(
            key=key.hex, provider="local", model=project.provider.model, task_id=cached.task_id,
            seed=key.seed, tokens=cached.tokens, video=FileRecord(video_path, _sha(video), len(video)),
            last_frame=FileRecord(frame_path, _sha(frame), len(frame)), inputs=dict(key.inputs),
            seed_derived=key.seed_derived, cost=0.5)
        last_frames[sid] = _sha(frame)
    sequences = {}
    for name, seq in project.sequences.items():
        members = tuple(scenes[m].video.sha256 for m in seq.scenes)
        data = (root / project.output_dir / f"{seq.scenes[0]}.mp4").read_bytes()
        path = sequence_path(project, name)
        atomic_write_bytes(root / path, data)
        sequences[name] = SequenceRecord(members, FileRecord(path, _sha(data), len(data)))
    lock = Lock(scenes, sequences)
    write_lock(workspace.lock_path, lock)
    workspace.close()
    return lock


def workspace_of(root: Path) -> Workspace:
    return open_workspace(root / SPEC)
