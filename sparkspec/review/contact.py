"""renders/contact.png: per scene its first, middle and last frame and its id, in one picture
to paste in a chat or a pull request.

Each picked video's three thumbnails are kept in `.sparkspec/review/` by the video's sha256,
so a later apply decodes only the scenes it changed.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from sparkspec.errors import MediaError
from sparkspec.fsutil import atomic_target

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
            first = next(iter(container.decode(stream)), None)
            if first is None:
                raise MediaError(f"{path}: the video stream holds no frame")
            first_thumb, middle = _thumbnail(first), first
            if stream.duration:
                target = (stream.start_time or 0) + stream.duration // 2
                container.seek(target, stream=stream, backward=True)
                for frame in container.decode(stream):
                    middle = frame
                    if frame.pts is not None and frame.pts >= target:
                        break
            return first_thumb, _thumbnail(middle)
    except (av.FFmpegError, OSError, ValueError) as exc:
        raise MediaError(f"{path}: cannot decode a frame ({exc})") from None


def _strip(entry: SheetEntry) -> Image.Image:
    """The scene's first, middle and last frame side by side, THUMB_WIDTH each."""
    from PIL import Image

    from sparkspec.media.frames import last_frame

    first, middle = _first_and_middle(entry.video)
    last = None
    if entry.last_frame is not None:
        try:
            with Image.open(entry.last_frame) as image:
                last = image.convert("RGB")
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


def _cached_strip(entry: SheetEntry, thumbs: Path) -> Image.Image:
    from PIL import Image

    path = thumbs / f"{entry.video_sha256}.png"
    try:
        with Image.open(path) as image:
            return image.convert("RGB")
    except OSError:
        pass
    strip = _strip(entry)
    with atomic_target(path) as tmp:
        strip.save(tmp, format="PNG", compress_level=1)
    return strip


def write_contact_sheet(dest: Path, entries: Sequence[SheetEntry], thumbs: Path,
                        workers: int | None = None) -> Path | None:
    """Write the sheet (None when there is no scene). Thumbnails missing from `thumbs` are
    decoded in parallel."""
    from PIL import Image, ImageDraw, ImageFont

    if not entries:
        return None
    left_out = len(entries) - MAX_SCENES
    entries = entries[:MAX_SCENES]
    with ThreadPoolExecutor(max_workers=workers or os.cpu_count() or 1) as pool:
        strips = list(pool.map(lambda e: _cached_strip(e, thumbs), entries))
    cell_w = max(s.width for s in strips)
    cell_h = LABEL + max(s.height for s in strips)
    columns = max(1, min(MAX_COLUMNS, len(strips), round(math.sqrt(len(strips) * cell_h / cell_w * 1.6)) or 1))
    rows = math.ceil((len(strips) + (left_out > 0)) / columns)
    sheet = Image.new("RGB", (GAP + columns * (cell_w + GAP), GAP + rows * (cell_h + GAP)), BACKGROUND)
    draw = ImageDraw.Draw(sheet)
    font = ImageFont.load_default(size=14)
    for n, (entry, strip) in enumerate(zip(entries, strips)):
        x = GAP + (n % columns) * (cell_w + GAP)
        y = GAP + (n // columns) * (cell_h + GAP)
        draw.text((x, y + 2), entry.scene, fill=TEXT, font=font)
        sheet.paste(strip, (x, y + LABEL))
    if left_out > 0:
        n = len(strips)
        x, y = GAP + (n % columns) * (cell_w + GAP), GAP + (n // columns) * (cell_h + GAP)
        draw.text((x, y + 2), f"+ {left_out:,} more scene{'s' if left_out != 1 else ''}: see index.html",
                  fill=TEXT, font=font)
    with atomic_target(dest) as tmp:
        sheet.save(tmp, format="PNG", compress_level=1)  # zlib at 6 took most of the time
    return dest
