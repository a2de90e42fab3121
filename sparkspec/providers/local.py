"""The offline provider: renders real H.264 videos on this machine, no key, no network.

It honours what decides a render's shape exactly as the API does (the table's pixel
size, 24 fps, the frame count, the first frame, the ratio picked by `adaptive`) and
draws the rest (`sparkspec.media.shots`): with a first frame, a slow camera move over
that image; without one, a seeded scene with the prompt's words on it. The same
request gives the same bytes, so its renders cache and lock like any other.

A first frame given as an https URL cannot be fetched offline; such a render starts
from the seeded scene instead, which keeps drafts working without a network.

Frames are generated on a worker thread, a few ahead of the encoder, which runs
on this one.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import os
import random
import re
import threading
import urllib.parse
import urllib.request
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

from sparkspec import apifacts
from sparkspec.errors import DiskError, DownloadError, MediaError, RenderFailed, TaskNotFound, UrlExpired
from sparkspec.fsutil import CHUNK, atomic_target, atomic_write_text
from sparkspec.jsontext import load_json
from sparkspec.providers.base import Downloaded, FirstFrame, RenderRequest, TaskState, TaskStatus

if TYPE_CHECKING:
    import av
    from PIL import Image

# Frames generated ahead of the encoder.
_LOOKAHEAD = 3
# The longest a poll waits for a render before it answers with the render's progress.
POLL_WAIT = 0.5


def render_video(request: RenderRequest, video_path: Path, last_frame_path: Path,
                 progress: Callable[[float], None] | None = None) -> tuple[int, int]:
    """Render `request` into an mp4 at `video_path` and its last frame as a PNG.

    Both files are written beside their destinations and renamed into place. Returns
    the video's width and height. Raises MediaError when the first frame is unreadable.
    """
    from sparkspec.media.encode import H264Writer
    from sparkspec.media.frames import to_image
    from sparkspec.media.shots import image_shot, procedural_shot, stamp_watermark

    source = _first_frame_image(request.first_frame)
    ratio = request.ratio
    if ratio == "adaptive":
        ratio = apifacts.nearest_ratio(*source.size) if source is not None else "16:9"
    width, height = apifacts.pixel_size(request.resolution, ratio)
    frames = apifacts.frame_count(request.duration, request.frames)
    # The prompt joins the seed, as it does upstream: one seed, two prompts, two scenes.
    rng = random.Random(f"{request.seed}\n{request.prompt}")
    if source is not None:
        shot = image_shot(source, width, height, frames, rng, request.camera_fixed)
    else:
        shot = procedural_shot(request.prompt, width, height, frames, rng, request.camera_fixed)
    with atomic_target(video_path) as video_tmp, atomic_target(last_frame_path) as png_tmp, \
            H264Writer(video_tmp, width, height) as writer, \
            ThreadPoolExecutor(max_workers=1, thread_name_prefix="local-frames") as pool:
        converter = writer.converter
        ahead: deque[Future[av.VideoFrame]] = deque()
        for index in range(min(_LOOKAHEAD, frames)):
            ahead.append(pool.submit(shot.frame, index, converter))
        for index in range(frames):
            frame = ahead.popleft().result()
            if index + _LOOKAHEAD < frames:
                ahead.append(pool.submit(shot.frame, index + _LOOKAHEAD, converter))
            if index == frames - 1:
                # The API's last frame carries no watermark: take it before marking.
                _save_png(to_image(frame), png_tmp)
            if request.watermark:
                stamp_watermark(frame)
            writer.write(frame)
            if progress is not None and (index % 8 == 7 or index == frames - 1):
                progress((index + 1) / frames)
    return width, height


# -- files ------------------------------------------------------------------------------

def _first_frame_image(first: FirstFrame | None) -> Image.Image | None:
    """The first frame as RGB, or None for none or an https URL (not fetchable offline)."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    if first is None:
        return None
    if first.path is not None:
        where = str(first.path)
        try:
            data = first.path.read_bytes()
        except OSError as exc:
            raise MediaError(f"first frame {where}: cannot read it ({exc.strerror})") from None
        if first.sha256 is not None and hashlib.sha256(data).hexdigest() != first.sha256:
            raise MediaError(f"the plan is stale: run plan again ({where} changed since the plan)")
    elif first.url is not None and first.url.startswith("data:"):
        from sparkspec.config.images import ImageProblem, decode_data_url

        where = "data URL"
        try:
            data = decode_data_url(first.url)
        except ImageProblem as exc:
            raise MediaError(f"first frame {where}: {exc}") from None
    else:
        return None
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()
            oriented = ImageOps.exif_transpose(image)
            return oriented.convert("RGB")
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise MediaError(f"first frame {where}: not a readable image ({exc})") from None


def _save_png(image: Image.Image, path: Path) -> None:
    # Level 1: a fifth of the time of the default for a few percent more bytes.
    with path.open("wb") as stream:
        image.save(stream, format="PNG", compress_level=1)


# -- the provider -----------------------------------------------------------------------

_TASK_ID = re.compile(r"^local-[0-9a-f]{24}$")
_HEX_KEY = re.compile(r"^[0-9a-f]{24,}$")
_VIDEO, _LAST_FRAME, _RECORD = "video.mp4", "last_frame.png", "task.json"


class LocalProvider:
    """Renders on this machine into `workdir/<task id>/`; a task is done when its files are.

    Like the API: `submit` starts the render and answers at once (its task running), `poll`
    says how far it got. A poll waits for the render up to POLL_WAIT, so the engine polls it
    without sleeping in between (`poll_waits`). The task id is the key's, and the files outlive
    the process: a later submit of the same key finds them and renders nothing. Renders run in
    threads, at most `max_parallel` at once (default: one per two CPUs, since each keeps about
    two busy).
    """

    type = "local"
    paid = False  # renders on this machine: not journalled, a task is found by its key
    poll_waits = True  # a poll returns when the render ends, or after POLL_WAIT with its progress

    def __init__(self, workdir: Path, max_parallel: int | None = None) -> None:
        self.workdir = workdir
        self.max_parallel = max_parallel or max(1, (os.cpu_count() or 1) // 2)
        # Taken in the render's thread, not the loop: a provider may outlive one event loop.
        self._slots = threading.BoundedSemaphore(self.max_parallel)
        self._tasks_lock = threading.Lock()
        self._task_locks: dict[str, threading.Lock] = {}
        # Renders under way in this process: task id -> (the render, its scene, its progress).
        self._running: dict[str, tuple[asyncio.Future[None], str, list[float]]] = {}
        self._stopping = threading.Event()

    async def submit(self, request: RenderRequest) -> TaskStatus:
        task_id = task_id_for(request.key)
        running = self._running.get(task_id)
        if running is not None:  # the same key submitted twice at once renders once
            return TaskStatus(task_id, TaskState.RUNNING, progress=running[2][0])
        done = self._completed(task_id)
        if done is not None:
            return done  # the same key renders the same bytes: keep what is there
        progress = [0.0]

        def advance(fraction: float) -> None:
            if self._stopping.is_set():
                raise _Stopped  # out of the frame loop; the half-written files are dropped
            progress[0] = fraction  # one float, written by the render's thread, read by the loop

        render = asyncio.ensure_future(asyncio.to_thread(self._render, request, task_id, advance))
        self._running[task_id] = (render, request.scene, progress)
        return TaskStatus(task_id, TaskState.RUNNING, progress=0.0)

    async def poll(self, task_id: str, locator: str | None = None) -> TaskStatus:
        running = self._running.get(task_id)
        if running is not None:
            render, scene, progress = running
            await asyncio.wait({render}, timeout=POLL_WAIT)
            if not render.done():
                return TaskStatus(task_id, TaskState.RUNNING, progress=progress[0])
            self._running.pop(task_id, None)  # a second poller of the same key may have taken it
            from PIL import Image

            try:
                render.result()
            except (MediaError, Image.DecompressionBombError) as exc:  # a picture Pillow refuses to make
                raise RenderFailed(f"local render of {scene} failed: {exc}") from None
            done = self._completed(task_id)
            if done is None:
                raise RenderFailed(f"local render of {scene} left no output in {self.workdir / task_id}")
            return done
        done = self._completed(task_id)
        if done is None:
            raise TaskNotFound(f"local task {task_id} has no finished output in {self.workdir}; "
                               "it will render again")
        return done

    async def download(self, url: str, dest: Path) -> Downloaded:
        source = self._source(url)
        return await asyncio.to_thread(_copy_hashed, source, dest)

    async def aclose(self) -> None:
        # An apply that stops (Ctrl-C) stops the renders still under way within a few frames:
        # nothing is paid for them, and the next apply renders them again.
        running = [render for render, _, _ in self._running.values()]
        self._running.clear()
        if running:
            self._stopping.set()
            await asyncio.wait(running)
            for render in running:
                if not render.cancelled():
                    render.exception()  # retrieved: nobody is left to report it

    def _render(self, request: RenderRequest, task_id: str,
                progress: Callable[[float], None] | None = None) -> None:
        folder = self.workdir / task_id
        with self._tasks_lock:
            task_lock = self._task_locks.setdefault(task_id, threading.Lock())
        # The same key submitted twice at once renders once; the second finds it done.
        with task_lock:
            if self._completed(task_id) is None:
                with self._slots:
                    self._render_into(request, task_id, folder, progress)

    def _render_into(self, request: RenderRequest, task_id: str, folder: Path,
                     progress: Callable[[float], None] | None = None) -> None:
        import dataclasses
        import json

        if request.seed == -1:  # as upstream does: a random seed, reported with the task
            request = dataclasses.replace(request, seed=random.SystemRandom().randrange(2**31 - 1))
        width, height = render_video(request, folder / _VIDEO, folder / _LAST_FRAME, progress)
        frames = apifacts.frame_count(request.duration, request.frames)
        record = {"task_id": task_id, "scene": request.scene, "width": width, "height": height,
                  "frames": frames, "seed": request.seed,
                  "tokens": apifacts.estimate_tokens(width, height, frames),
                  "bytes": {_VIDEO: (folder / _VIDEO).stat().st_size,
                            _LAST_FRAME: (folder / _LAST_FRAME).stat().st_size}}
        # Written last: its presence says both outputs are whole.
        atomic_write_text(folder / _RECORD, json.dumps(record, sort_keys=True, indent=2) + "\n")

    def _completed(self, task_id: str) -> TaskStatus | None:
        import json

        if not _TASK_ID.match(task_id):
            return None
        folder = self.workdir / task_id
        video, frame = folder / _VIDEO, folder / _LAST_FRAME
        try:
            record = load_json((folder / _RECORD).read_text(encoding="utf-8"))
            tokens = int(record["tokens"])
            seed = int(record["seed"])
            # A file of another size than recorded was damaged since: render again.
            if any(path.stat().st_size != int(record["bytes"][path.name]) for path in (video, frame)):
                return None
        except (OSError, ValueError, KeyError, TypeError):
            return None
        return TaskStatus(task_id, TaskState.COMPLETED, progress=1.0,
                          video_url=video.resolve().as_uri(),
                          last_frame_url=frame.resolve().as_uri(), tokens=tokens, seed=seed)

    def _source(self, url: str) -> Path:
        parsed = urllib.parse.urlparse(url)
        if parsed.scheme != "file" or parsed.netloc not in ("", "localhost"):
            raise DownloadError(f"the local provider only serves its own files, not {url}")
        path = Path(urllib.request.url2pathname(parsed.path)).resolve()
        if not path.is_relative_to(self.workdir.resolve()):
            raise DownloadError(f"{path} is outside the local provider's folder {self.workdir}")
        return path


class _Stopped(Exception):
    """A render stopped by `aclose`."""


def task_id_for(key: str) -> str:
    """The task id of a render key: stable, so a rerun finds the files of an earlier one."""
    import hashlib

    digest = key if _HEX_KEY.match(key) else hashlib.sha256(key.encode("utf-8")).hexdigest()
    return "local-" + digest[:24]


def _copy_hashed(source: Path, dest: Path) -> Downloaded:
    import hashlib

    digest = hashlib.sha256()
    size = 0
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        with source.open("rb") as reader, dest.open("wb") as writer:
            while chunk := reader.read(CHUNK):
                digest.update(chunk)
                writer.write(chunk)
                size += len(chunk)
            writer.flush()
            os.fsync(writer.fileno())
    except FileNotFoundError:
        dest.unlink(missing_ok=True)
        # Gone since the task was read: polling again finds it missing and renders anew.
        raise UrlExpired(f"{source} is gone") from None
    except OSError as exc:
        dest.unlink(missing_ok=True)
        if DiskError.is_disk(exc):  # this machine's disk, not the render: the task stays collectable
            raise DiskError.from_os(exc, dest) from None
        raise DownloadError(f"cannot copy {source}: {exc.strerror or exc}") from None
    return Downloaded(dest, digest.hexdigest(), size)
