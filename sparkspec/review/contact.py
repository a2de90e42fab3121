"""renders/contact.png: per scene its first, middle and last frame and its id, in one picture
to paste in a chat or a pull request.

Each picked video's three thumbnails (its strip) are kept in `.sparkspec/review/` by the
video's sha256, so a later apply decodes only the scenes it changed; an apply that pulls from
the team's remote makes each pulled scene's strip as soon as its pull lands (`make_strip`),
while the other pulls stream. The sheet is written a band of rows at a time: neither the
strips nor the whole picture are ever in memory together.
"""

from __future__ import annotations

import math
import os
import threading
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from sparkspec.errors import MediaError
from sparkspec.fsutil import atomic_target
from sparkspec.media.probe import media_reason

if TYPE_CHECKING:
    import av
    from PIL import Image

SHEET = "contact.png"
THUMB_WIDTH = 160
GAP = 6
LABEL = 20
MAX_COLUMNS = 4
# One picture to paste in a chat: past this many scenes it would be too tall to show
# (5,000 scenes: 2,000 x 145,000 pixels, 870 MB in memory), so it covers the first ones
# in graph order and says how many more the review page has.
MAX_SCENES = 256
BACKGROUND = (20, 22, 26)
TEXT = (230, 230, 230)
DAMAGED = (OSError, SyntaxError, ValueError)  # what Pillow raises for a cut or corrupt PNG
FORWARD_SECONDS = 2  # a middle frame this close to the first is decoded on to, not sought


@dataclass(frozen=True)
class SheetEntry:
    scene: str
    video: Path
    video_sha256: str
    last_frame: Path | None  # the render's own last frame, when it is on disk


def _thumbnail(frame: av.VideoFrame) -> Image.Image:
    """A frame scaled to THUMB_WIDTH by swscale: no full-size RGB copy, no second resize."""
    height = max(1, round(THUMB_WIDTH * frame.height / frame.width))
    image: Image.Image = frame.reformat(width=THUMB_WIDTH, height=height, format="rgb24",
                                        interpolation="BILINEAR", threads=1).to_image()  # type: ignore[no-untyped-call]
    return image


def _first_and_middle(path: Path) -> tuple[Image.Image, Image.Image]:
    import av

    try:
        with av.open(str(path), mode="r") as container:
            if not container.streams.video:
                raise MediaError(f"{path}: the file holds no video stream")
            stream = container.streams.video[0]
            # Slice threads, not frame threads: the sheet decodes one clip per core already,
            # and frame threading costs a third more CPU and a buffer of frames per clip.
            stream.thread_type = "SLICE"
            frames = iter(container.decode(stream))
            first = next(frames, None)
            if first is None:
                raise MediaError(f"{path}: the video stream holds no frame")
            first_thumb, middle = _thumbnail(first), first
            if stream.duration:
                target = (stream.start_time or 0) + stream.duration // 2
                if first.pts is None or first.pts >= target:
                    frames = iter(())
                elif stream.time_base is None or (target - first.pts) * stream.time_base > FORWARD_SECONDS:
                    # Far: from the keyframe before the middle. Near: decoding on costs less
                    # than a seek back to the keyframe just decoded.
                    container.seek(target, stream=stream, backward=True)
                    frames = iter(container.decode(stream))
                for frame in frames:
                    middle = frame
                    if frame.pts is not None and frame.pts >= target:
                        break
            return first_thumb, _thumbnail(middle)
    except (av.FFmpegError, OSError, ValueError) as exc:
        raise MediaError(f"{path}: cannot decode a frame ({media_reason(exc)})") from None


def _strip(entry: SheetEntry) -> Image.Image:
    """The scene's first, middle and last frame side by side, THUMB_WIDTH each."""
    from PIL import Image

    from sparkspec.media.frames import last_frame

    first, middle = _first_and_middle(entry.video)
    last = None
    if entry.last_frame is not None:
        try:
            with Image.open(entry.last_frame) as image:  # decoded once, straight to the thumbnail's size
                rgb = image if image.mode == "RGB" else image.convert("RGB")
                last = rgb.resize(first.size, Image.Resampling.BILINEAR, reducing_gap=2.0)
        except OSError:
            last = None
    if last is None:
        last = last_frame(entry.video)
    strip = Image.new("RGB", (3 * THUMB_WIDTH + 2 * GAP, first.height), BACKGROUND)
    for at, frame in enumerate((first, middle, last)):
        if frame.size != first.size:
            frame = frame.resize(first.size, Image.Resampling.BILINEAR)
        strip.paste(frame, (at * (THUMB_WIDTH + GAP), 0))
    return strip


def make_strip(entry: SheetEntry, thumbs: Path) -> tuple[int, int]:
    """Decode `entry`'s strip into `thumbs` unless it is there: its size."""
    from PIL import Image

    try:
        with Image.open(_strip_path(entry, thumbs)) as image:
            return image.size
    except DAMAGED:
        pass
    return _new_strip(entry, thumbs).size


def _new_strip(entry: SheetEntry, thumbs: Path) -> Image.Image:
    """Decode the strip and keep it. The file is a cache (a damaged or missing one is decoded
    again), so it is renamed into place without an fsync."""
    from sparkspec.media.pngrows import write_rgb_rows

    strip = _strip(entry)
    path = _strip_path(entry, thumbs)
    thumbs.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        with tmp.open("wb") as out:
            write_rgb_rows(out, strip.width, strip.height, [strip.tobytes()])
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return strip


def _strip_path(entry: SheetEntry, thumbs: Path) -> Path:
    return thumbs / f"{entry.video_sha256}.png"


def _load_strip(entry: SheetEntry, thumbs: Path) -> Image.Image:
    from PIL import Image

    try:
        with Image.open(_strip_path(entry, thumbs)) as image:
            return image.convert("RGB")
    except DAMAGED:  # only its header was sound, or it went: decode it again
        return _new_strip(entry, thumbs)


def write_contact_sheet(dest: Path, entries: Sequence[SheetEntry], thumbs: Path,
                        workers: int | None = None) -> Path | None:
    """Write the sheet (None when there is no scene). Strips missing from `thumbs` are decoded
    in parallel first; then the sheet is drawn and encoded a row of cells at a time."""
    from PIL import Image, ImageDraw, ImageFont

    from sparkspec.media.pngrows import write_rgb_rows

    if not entries:
        return None
    left_out = len(entries) - MAX_SCENES
    entries = entries[:MAX_SCENES]
    with ThreadPoolExecutor(max_workers=workers or os.cpu_count() or 1) as pool:
        sizes = list(pool.map(lambda e: make_strip(e, thumbs), entries))
    cell_w = max(w for w, _ in sizes)
    cell_h = LABEL + max(h for _, h in sizes)
    columns = max(1, min(MAX_COLUMNS, len(sizes), round(math.sqrt(len(sizes) * cell_h / cell_w * 1.6)) or 1))
    rows = math.ceil((len(sizes) + (left_out > 0)) / columns)
    width, height = GAP + columns * (cell_w + GAP), GAP + rows * (cell_h + GAP)
    font = ImageFont.load_default(size=14)

    def bands() -> Iterator[bytes]:
        """Each row of cells with the gap above it, then the gap below the last."""
        for row in range(rows):
            band = Image.new("RGB", (width, GAP + cell_h), BACKGROUND)
            draw = ImageDraw.Draw(band)
            for n in range(row * columns, min((row + 1) * columns, len(entries) + (left_out > 0))):
                x = GAP + (n % columns) * (cell_w + GAP)
                if n == len(entries):
                    draw.text((x, GAP + 2), f"+ {left_out:,} more scene{'s' if left_out != 1 else ''}: "
                              "see index.html", fill=TEXT, font=font)
                    continue
                draw.text((x, GAP + 2), entries[n].scene, fill=TEXT, font=font)
                band.paste(_load_strip(entries[n], thumbs), (x, GAP + LABEL))
            yield band.tobytes()
        yield Image.new("RGB", (width, GAP), BACKGROUND).tobytes()

    with atomic_target(dest) as tmp, tmp.open("wb") as out:
        write_rgb_rows(out, width, height, bands())
    return dest
