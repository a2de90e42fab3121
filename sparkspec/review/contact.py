"""renders/contact.png: per scene its first, middle and last frame and its id, in one picture
to paste in a chat or a pull request.

Each picked video's three thumbnails side by side are its strip. The apply makes a scene's
strip where it fetched the render (in a fetch worker, or as a pull from the team's remote
lands) and keeps it in memory, packed; the sheet itself is the strips' cache on disk: its
record (`sheetid`) says where each video's strip lies in it, so a later apply crops the
strips of the scenes it did not change out of the sheet it replaces and decodes only the
rest. No file is written per strip: an apply's writes stay its outputs, the lock and the
state it needs (one thumbnail file a scene was a fifth of a 480p clip). The sheet is written
a band of rows at a time, and read back the same way: the whole picture is never in memory.
"""

from __future__ import annotations

import math
import os
import zlib
from collections.abc import Iterator, Mapping, Sequence
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


@dataclass(frozen=True)
class Strip:
    """A strip's pixels, packed: zlib at its fastest level holds one in a fifth to a third of its
    raw RGB, so the 256 a sheet shows stay small in memory and cheap to send from a worker."""

    width: int
    height: int
    packed: bytes

    @classmethod
    def of(cls, image: Image.Image) -> Strip:
        return cls(image.width, image.height, zlib.compress(image.tobytes(), 1))

    @classmethod
    def of_rows(cls, width: int, rows: Sequence[bytes]) -> Strip:
        return cls(width, len(rows), zlib.compress(b"".join(rows), 1))

    def image(self) -> Image.Image:
        from PIL import Image

        return Image.frombytes("RGB", (self.width, self.height), zlib.decompress(self.packed))


# Where a video's strip lies on a sheet: its sha256 and the strip's box (x, y, width, height).
Cell = tuple[str, int, int, int, int]


def make_strip(entry: SheetEntry) -> Strip:
    """Decode `entry`'s strip. Raises MediaError when the video gives no frame."""
    return Strip.of(_strip(entry))


def strips_on_sheet(data: bytes, cells: Sequence[Cell], wanted: set[str]) -> dict[str, Strip]:
    """The strips of the `wanted` videos, cropped from a sheet this module wrote (`data`, its
    PNG) whose strips lie at `cells`; read a row at a time. Raises ValueError for a picture
    that is not such a sheet, or boxes that do not fit in it."""
    from sparkspec.media.pngrows import read_rgb_rows

    width, height, rows = read_rgb_rows(data)
    boxes: dict[str, Cell] = {}
    for cell in cells:
        sha, x, y, w, h = cell
        if sha in wanted and sha not in boxes:
            if x < 0 or y < 0 or w <= 0 or h <= 0 or x + w > width or y + h > height:
                raise ValueError(f"a strip's box {cell[1:]} is not inside the sheet")
            boxes[sha] = cell
    growing: dict[str, list[bytes]] = {sha: [] for sha in boxes}
    by_top = sorted(boxes.values(), key=lambda c: c[2])
    open_cells: list[Cell] = []
    found: dict[str, Strip] = {}
    for row_at, row in enumerate(rows):
        while by_top and by_top[0][2] == row_at:
            open_cells.append(by_top.pop(0))
        if not open_cells and not by_top:
            break
        for cell in open_cells:
            sha, x, _, w, _ = cell
            growing[sha].append(row[3 * x:3 * (x + w)])
        for cell in [c for c in open_cells if c[2] + c[4] == row_at + 1]:
            open_cells.remove(cell)
            found[cell[0]] = Strip.of_rows(cell[3], growing.pop(cell[0]))
    return found


def write_contact_sheet(dest: Path, entries: Sequence[SheetEntry], strips: Mapping[str, Strip] | None = None,
                        workers: int | None = None) -> tuple[Path, list[Cell]] | None:
    """Write the sheet (None when there is no scene) and say where each strip lies on it.
    `strips`: those made already, by video sha256; the others are decoded first, in
    parallel. Then the sheet is drawn and encoded a row of cells at a time."""
    from PIL import Image, ImageDraw, ImageFont

    from sparkspec.media.pngrows import write_rgb_rows

    if not entries:
        return None
    left_out = len(entries) - MAX_SCENES
    entries = entries[:MAX_SCENES]
    made = dict(strips or {})
    missing = list({e.video_sha256: e for e in entries if e.video_sha256 not in made}.values())
    with ThreadPoolExecutor(max_workers=workers or os.cpu_count() or 1) as pool:
        for entry, strip in zip(missing, pool.map(make_strip, missing)):
            made[entry.video_sha256] = strip
    sizes = [(made[e.video_sha256].width, made[e.video_sha256].height) for e in entries]
    cell_w = max(w for w, _ in sizes)
    cell_h = LABEL + max(h for _, h in sizes)
    columns = max(1, min(MAX_COLUMNS, len(sizes), round(math.sqrt(len(sizes) * cell_h / cell_w * 1.6)) or 1))
    rows = math.ceil((len(sizes) + (left_out > 0)) / columns)
    width, height = GAP + columns * (cell_w + GAP), GAP + rows * (cell_h + GAP)
    font = ImageFont.load_default(size=14)
    cells: list[Cell] = []

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
                strip = made[entries[n].video_sha256]
                band.paste(strip.image(), (x, GAP + LABEL))
                cells.append((entries[n].video_sha256, x, row * (GAP + cell_h) + GAP + LABEL,
                              strip.width, strip.height))
            yield band.tobytes()
        yield Image.new("RGB", (width, GAP), BACKGROUND).tobytes()

    with atomic_target(dest) as tmp, tmp.open("wb") as out:
        write_rgb_rows(out, width, height, bands())
    return dest, cells
