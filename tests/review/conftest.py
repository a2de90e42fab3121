"""A project left as an apply leaves it, with real (tiny) clips: outputs in renders/, blobs and
entries in the cache, the lock. Rendering is skipped; everything the review reads is real."""

from __future__ import annotations

from pathlib import Path

import av
from PIL import Image

from applied import SPEC, Render, leave_applied
from sparkspec.config.model import Project
from sparkspec.keys import SceneKey
from sparkspec.state.lockfile import Lock
from sparkspec.state.workspace import Workspace, open_workspace

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


def settle(root: Path, scratch: Path, bases: dict[str, int]) -> Lock:
    """Leave the project as a successful apply of its current spec: scene s's clip is coloured
    by bases[s] (change it to make a new render)."""
    scratch.mkdir(parents=True, exist_ok=True)

    def render_of(project: Project, sid: str, key: SceneKey, take: int) -> Render:
        base = bases[sid]
        return Render(clip_bytes(scratch / f"{sid}-{base}.mp4", base),
                      png_bytes(scratch / f"{sid}-{base}.png", frame_color(base, FRAMES - 1)),
                      f"task-{sid}-{base}", 1000 + base, "local", cost=0.5)

    def sequence_of(root: Path, project: Project, name: str, members: tuple[str, ...]) -> bytes:
        return (root / project.output_dir / f"{project.sequences[name].scenes[0]}.mp4").read_bytes()

    return leave_applied(root, render_of, sequence_of)


def workspace_of(root: Path) -> Workspace:
    return open_workspace(root / SPEC)
