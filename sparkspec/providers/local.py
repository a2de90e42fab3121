"""The offline provider: renders real H.264 videos on this machine, no key, no network.

It honours what decides a render's shape exactly as the API does (the table's pixel
size, 24 fps, the frame count, the first frame, the ratio picked by `adaptive`) and
draws the rest: with a first frame, a slow camera move over that image; without one,
a seeded scene of gradients, shapes and drifting lights with the prompt's words on it.
The same request gives the same bytes, so its renders cache and lock like any other.

A first frame given as an https URL cannot be fetched offline; such a render starts
from the seeded scene instead, which keeps drafts working without a network.

Speed: generating frames costs little more than encoding them. The scene is drawn
once, larger than the frame; each frame is an integer crop of it, scaled and turned
into YUV by one swscale call, on a worker thread while the encoder runs.
"""

from __future__ import annotations

import asyncio
import colorsys
import io
import os
import random
import re
import tempfile
import threading
import urllib.parse
import urllib.request
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from sparkspec import apifacts
from sparkspec.errors import DownloadError, MediaError, RenderFailed, TaskNotFound
from sparkspec.fsutil import CHUNK, atomic_write_text, fsync_dir
from sparkspec.providers.base import Downloaded, FirstFrame, RenderRequest, TaskState, TaskStatus

if TYPE_CHECKING:
    import av
    from PIL import Image

    from sparkspec.media.encode import FrameConverter

# The scene is drawn this much larger than the frame, so the camera can move over it.
_WORLD_MARGIN = 1.25
# A first frame is pushed into by up to this zoom over the clip.
_PUSH_IN = 0.08
# Frames generated ahead of the encoder.
_LOOKAHEAD = 3


def render_video(request: RenderRequest, video_path: Path, last_frame_path: Path,
                 progress: Callable[[float], None] | None = None) -> tuple[int, int]:
    """Render `request` into an mp4 at `video_path` and its last frame as a PNG.

    Both files are written beside their destinations and renamed into place. Returns
    the video's width and height. Raises MediaError when the first frame is unreadable.
    """
    from sparkspec.media.encode import H264Writer
    from sparkspec.media.frames import to_image

    source = _first_frame_image(request.first_frame)
    ratio = request.ratio
    if ratio == "adaptive":
        ratio = apifacts.nearest_ratio(*source.size) if source is not None else "16:9"
    width, height = apifacts.pixel_size(request.resolution, ratio)
    frames = apifacts.frame_count(request.duration, request.frames)
    # The prompt joins the seed, as it does upstream: one seed, two prompts, two scenes.
    rng = random.Random(f"{request.seed}\n{request.prompt}")
    if source is not None:
        shot = _image_shot(source, width, height, frames, rng, request.camera_fixed)
    else:
        shot = _procedural_shot(request.prompt, width, height, frames, rng, request.camera_fixed)
    video_tmp = _temp_beside(video_path)
    png_tmp = _temp_beside(last_frame_path)
    try:
        with H264Writer(video_tmp, width, height) as writer, \
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
                    _stamp_watermark(frame)
                writer.write(frame)
                if progress is not None and (index % 8 == 7 or index == frames - 1):
                    progress((index + 1) / frames)
        _fsync(video_tmp)
        for tmp, dest in ((video_tmp, video_path), (png_tmp, last_frame_path)):
            os.chmod(tmp, 0o644)
            os.replace(tmp, dest)
            fsync_dir(dest.parent)
    finally:
        video_tmp.unlink(missing_ok=True)
        png_tmp.unlink(missing_ok=True)
    return width, height


# -- the picture ------------------------------------------------------------------------

@dataclass(frozen=True)
class _Orb:
    """A soft light drifting across the scene, in the scene's coordinates."""

    color: Image.Image
    mask: Image.Image
    start: tuple[float, float]
    end: tuple[float, float]


@dataclass(frozen=True)
class _Shot:
    """A still `world` seen through a moving camera box, with orbs drifting over it."""

    world: Image.Image
    boxes: tuple[tuple[int, int, int, int], ...]  # per frame, integer crop boxes
    orbs: tuple[_Orb, ...] = ()

    def frame(self, index: int, converter: FrameConverter) -> av.VideoFrame:
        box = self.boxes[index]
        if box == (0, 0) + self.world.size and not self.orbs:
            view = self.world  # the first frame, exactly as given
        else:
            view = self.world.crop(box)
        if self.orbs:
            t = index / max(1, len(self.boxes) - 1)
            for orb in self.orbs:
                x = orb.start[0] + (orb.end[0] - orb.start[0]) * t - box[0]
                y = orb.start[1] + (orb.end[1] - orb.start[1]) * t - box[1]
                view.paste(orb.color, (round(x), round(y)), orb.mask)
        return converter.from_image(view)


def _image_shot(source: Image.Image, width: int, height: int, frames: int,
                rng: random.Random, camera_fixed: bool) -> _Shot:
    """The first frame cover-fitted to the video, then a slow push-in with a drift."""
    from PIL import ImageOps

    world = ImageOps.fit(source, (width, height), method=_lanczos())
    if camera_fixed:
        return _Shot(world, ((0, 0, width, height),) * frames)
    drift = (rng.uniform(-0.6, 0.6), rng.uniform(-0.6, 0.6))
    boxes = []
    for index in range(frames):
        e = _ease(index / max(1, frames - 1))
        zoom = 1 + _PUSH_IN * e
        boxes.append(_box(world.size, width / zoom, height / zoom,
                          (drift[0] * e, drift[1] * e)))
    return _Shot(world, tuple(boxes))


def _procedural_shot(prompt: str, width: int, height: int, frames: int,
                     rng: random.Random, camera_fixed: bool) -> _Shot:
    """A seeded scene: gradient, shapes, the prompt's words, drifting lights."""
    world_size = (round(width * _WORLD_MARGIN), round(height * _WORLD_MARGIN))
    hue = rng.random()
    world = _backdrop(world_size, hue, rng)
    _draw_words(world, prompt, width, height)
    orbs = tuple(_orb(world_size, height, hue, rng) for _ in range(rng.randint(2, 4)))
    # Box scale over the frame size: 1.25 shows the whole scene, 0.9 a close-up.
    if camera_fixed:
        scales = (1.1, 1.1)
        starts = ends = (0.0, 0.0)
    else:
        first = rng.uniform(1.0, 1.25)
        scales = (first, min(1.25, max(0.9, first + rng.choice((-1, 1)) * rng.uniform(0.1, 0.2))))
        starts = (rng.uniform(-0.8, 0.8), rng.uniform(-0.8, 0.8))
        ends = (rng.uniform(-0.8, 0.8), rng.uniform(-0.8, 0.8))
    boxes = []
    for index in range(frames):
        e = _ease(index / max(1, frames - 1))
        scale = scales[0] + (scales[1] - scales[0]) * e
        at = (starts[0] + (ends[0] - starts[0]) * e, starts[1] + (ends[1] - starts[1]) * e)
        boxes.append(_box(world_size, width * scale, height * scale, at))
    return _Shot(world, tuple(boxes), orbs)


def _box(world: tuple[int, int], box_w: float, box_h: float,
         at: tuple[float, float]) -> tuple[int, int, int, int]:
    """A box of about box_w x box_h inside `world`, centred at `at` (-1..1 of the slack)."""
    w, h = min(world[0], round(box_w)), min(world[1], round(box_h))
    left = round((world[0] - w) / 2 * (1 + at[0]))
    top = round((world[1] - h) / 2 * (1 + at[1]))
    return left, top, left + w, top + h


def _ease(t: float) -> float:
    return t * t * (3 - 2 * t)


def _rgb(h: float, s: float, v: float) -> tuple[int, int, int]:
    r, g, b = colorsys.hsv_to_rgb(h % 1.0, s, v)
    return round(r * 255), round(g * 255), round(b * 255)


def _backdrop(size: tuple[int, int], hue: float, rng: random.Random) -> Image.Image:
    from PIL import Image, ImageDraw, ImageOps

    gradient = Image.linear_gradient("L").rotate(rng.uniform(0, 360), resample=Image.Resampling.BICUBIC)
    gradient = gradient.crop((48, 48, 208, 208)).resize(size, Image.Resampling.BILINEAR)
    world = ImageOps.colorize(gradient, _rgb(hue, 0.65, 0.25), _rgb(hue + rng.uniform(0.08, 0.3), 0.55, 0.9))
    layer = Image.new("RGBA", size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(layer)
    for _ in range(rng.randint(5, 9)):
        r = rng.uniform(0.06, 0.22) * size[1]
        x, y = rng.uniform(0, size[0]), rng.uniform(0, size[1])
        fill = _rgb(hue + rng.uniform(-0.2, 0.5), rng.uniform(0.3, 0.8), rng.uniform(0.4, 1.0))
        fill_a = fill + (rng.randint(50, 130),)
        kind = rng.choice(("ellipse", "rectangle", "triangle"))
        if kind == "ellipse":
            draw.ellipse((x - r, y - r, x + r, y + r), fill=fill_a)
        elif kind == "rectangle":
            draw.rounded_rectangle((x - r, y - r * 0.6, x + r, y + r * 0.6), radius=r / 5, fill=fill_a)
        else:
            draw.regular_polygon((x, y, r), 3, rotation=rng.uniform(0, 120), fill=fill_a)
    return Image.alpha_composite(world.convert("RGBA"), layer).convert("RGB")


def _draw_words(world: Image.Image, prompt: str, width: int, height: int) -> None:
    """The prompt's first words, wrapped, centred in the scene, readable in any frame."""
    from PIL import ImageDraw, ImageFont

    words = prompt.split()
    if not words:
        return
    font = ImageFont.load_default(size=max(12, height // 18))
    draw = ImageDraw.Draw(world)
    lines: list[str] = []
    line = ""
    for word in words[:24]:
        attempt = f"{line} {word}".strip()
        if line and draw.textlength(attempt, font=font) > width * 0.7:
            lines.append(line)
            line = word
        else:
            line = attempt
    lines.append(line)
    if len(lines) > 4 or len(words) > 24:
        lines = lines[:4]
        lines[-1] += " ..."
    text = "\n".join(lines)
    center = (world.size[0] / 2, world.size[1] / 2)
    shadow = max(1, height // 240)
    draw.multiline_text((center[0] + shadow, center[1] + shadow), text, font=font,
                        fill=(0, 0, 0), anchor="mm", align="center", spacing=height // 60)
    draw.multiline_text(center, text, font=font, fill=(250, 250, 245), anchor="mm",
                        align="center", spacing=height // 60)


def _orb(world: tuple[int, int], height: int, hue: float, rng: random.Random) -> _Orb:
    from PIL import Image, ImageChops

    size = max(8, round(height * rng.uniform(0.12, 0.3)))
    strength = rng.uniform(0.35, 0.7)
    mask = ImageChops.invert(Image.radial_gradient("L")).resize((size, size), Image.Resampling.BILINEAR)
    mask = mask.point([round(max(0, v - 128) * 2 * strength) for v in range(256)])
    color = Image.new("RGB", (size, size), _rgb(hue + rng.uniform(0.3, 0.7), 0.35, 1.0))
    start = (rng.uniform(0, world[0] - size), rng.uniform(0, world[1] - size))
    end = (rng.uniform(0, world[0] - size), rng.uniform(0, world[1] - size))
    return _Orb(color, mask, start, end)


# -- watermark ---------------------------------------------------------------------------

_WATERMARK_TEXT = "AI generated"
_watermarks: dict[tuple[int, int], tuple[int, int, list[bytes], int]] = {}
_watermarks_lock = threading.Lock()


def _stamp_watermark(frame: av.VideoFrame) -> None:
    """A grey label, bottom right, written straight into the YUV planes (no RGB round trip)."""
    x0, y0, rows, label_w = _watermark(frame.width, frame.height)
    luma, cb, cr = frame.planes
    y_view, cb_view, cr_view = memoryview(luma), memoryview(cb), memoryview(cr)
    neutral = b"\x80" * (label_w // 2)
    for r, row in enumerate(rows):
        start = (y0 + r) * luma.line_size + x0
        y_view[start:start + label_w] = row
        if r % 2 == 0:
            chroma = ((y0 + r) // 2) * cb.line_size + x0 // 2
            cb_view[chroma:chroma + label_w // 2] = neutral
            cr_view[chroma:chroma + label_w // 2] = neutral


def _watermark(width: int, height: int) -> tuple[int, int, list[bytes], int]:
    with _watermarks_lock:
        cached = _watermarks.get((width, height))
        if cached is None:
            cached = _watermarks[(width, height)] = _make_watermark(width, height)
        return cached


def _make_watermark(width: int, height: int) -> tuple[int, int, list[bytes], int]:
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.load_default(size=max(10, height // 40))
    pad = max(2, height // 160) * 2
    left, top, right, bottom = (int(v) for v in font.getbbox(_WATERMARK_TEXT))
    label_w = (right - left + 2 * pad + 1) // 2 * 2
    label_h = (bottom - top + 2 * pad + 1) // 2 * 2
    label = Image.new("L", (label_w, label_h), 48)  # limited-range luma: 16 black, 235 white
    ImageDraw.Draw(label).text((pad - left, pad - top), _WATERMARK_TEXT, font=font, fill=220)
    x0 = (width - label_w - pad * 2) // 2 * 2
    y0 = (height - label_h - pad * 2) // 2 * 2
    data = label.tobytes()
    rows = [data[r * label_w:(r + 1) * label_w] for r in range(label_h)]
    return x0, y0, rows, label_w


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
    elif first.url is not None and first.url.startswith("data:"):
        from sparkspec.spec.images import ImageProblem, decode_data_url

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
        stream.flush()
        os.fsync(stream.fileno())


def _fsync(path: Path) -> None:
    with path.open("rb+") as stream:
        os.fsync(stream.fileno())


def _temp_beside(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    return Path(name)


def _lanczos() -> Image.Resampling:
    from PIL import Image

    return Image.Resampling.LANCZOS


# -- the provider -----------------------------------------------------------------------

_TASK_ID = re.compile(r"^local-[0-9a-f]{24}$")
_HEX_KEY = re.compile(r"^[0-9a-f]{24,}$")
_VIDEO, _LAST_FRAME, _RECORD = "video.mp4", "last_frame.png", "task.json"


class LocalProvider:
    """Renders on this machine into `workdir/<task id>/`; a task is done when its files are.

    `submit` renders before it returns, so the engine never waits between polls. The
    files outlive the process: a later apply polls the task id from its journal and
    collects them without rendering again. Renders run in threads, at most
    `max_parallel` at once (default: one per two CPUs, since each keeps about two busy).
    """

    type = "local"

    def __init__(self, workdir: Path, max_parallel: int | None = None) -> None:
        self.workdir = workdir
        self.max_parallel = max_parallel or max(1, (os.cpu_count() or 1) // 2)
        # Taken in the render's thread, not the loop: a provider may outlive one event loop.
        self._slots = threading.BoundedSemaphore(self.max_parallel)
        self._tasks_lock = threading.Lock()
        self._task_locks: dict[str, threading.Lock] = {}

    async def submit(self, request: RenderRequest) -> TaskStatus:
        task_id = task_id_for(request.key)
        done = self._completed(task_id)
        if done is not None:
            return done  # the same key renders the same bytes: keep what is there
        try:
            await asyncio.to_thread(self._render, request, task_id)
        except MediaError as exc:
            raise RenderFailed(f"local render of {request.scene} failed: {exc}") from None
        done = self._completed(task_id)
        if done is None:
            raise RenderFailed(f"local render of {request.scene} left no output in "
                               f"{self.workdir / task_id}")
        return done

    async def poll(self, task_id: str) -> TaskStatus:
        done = self._completed(task_id)
        if done is None:
            raise TaskNotFound(f"local task {task_id} has no finished output in {self.workdir}; "
                               "it will render again")
        return done

    async def download(self, url: str, dest: Path) -> Downloaded:
        source = self._source(url)
        return await asyncio.to_thread(_copy_hashed, source, dest)

    async def aclose(self) -> None:
        return None

    def _render(self, request: RenderRequest, task_id: str) -> None:
        folder = self.workdir / task_id
        with self._tasks_lock:
            task_lock = self._task_locks.setdefault(task_id, threading.Lock())
        # The same key submitted twice at once renders once; the second finds it done.
        with task_lock:
            if self._completed(task_id) is None:
                with self._slots:
                    self._render_into(request, task_id, folder)

    def _render_into(self, request: RenderRequest, task_id: str, folder: Path) -> None:
        import json

        width, height = render_video(request, folder / _VIDEO, folder / _LAST_FRAME)
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
            record = json.loads((folder / _RECORD).read_text(encoding="utf-8"))
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
        raise DownloadError(f"{source} is gone", code="url_expired") from None
    except OSError as exc:
        dest.unlink(missing_ok=True)
        raise DownloadError(f"cannot copy {source}: {exc.strerror or exc}") from None
    return Downloaded(dest, digest.hexdigest(), size)
