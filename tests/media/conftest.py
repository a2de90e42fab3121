"""Real clips on disk for the media tests, written with PyAV itself."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import av
import pytest
from PIL import Image, ImageChops, ImageStat

Color = tuple[int, int, int]
ClipFactory = Callable[..., Path]


def color_for(index: int) -> Color:
    """A colour per frame index, far enough apart to tell frames apart after coding."""
    return ((index * 37) % 256, (index * 91 + 40) % 256, 255 - (index * 53) % 256)


def mean_difference(one: Image.Image, other: Image.Image) -> float:
    assert one.size == other.size
    diff = ImageChops.difference(one.convert("RGB"), other.convert("RGB"))
    return sum(ImageStat.Stat(diff).mean) / 3


def write_clip(path: Path, *, width: int = 320, height: int = 240, frames: int = 12,
               fmt: str = "mp4", gop: int | None = None, rate: int = 24,
               preset: str = "ultrafast") -> Path:
    """Frame i is a solid `color_for(i)` with a white square that moves right.

    `preset` ultrafast codes no B-frames; slower presets do (so decode order differs
    from presentation order and timestamps start below zero).
    """
    with av.open(str(path), mode="w", format=fmt) as container:
        stream = container.add_stream("libx264", rate=rate,
                                      options={"preset": preset, "threads": "1"})
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        if gop is not None:
            stream.codec_context.gop_size = gop
        for index in range(frames):
            image = Image.new("RGB", (width, height), color_for(index))
            image.paste((255, 255, 255), (index * 4, 8, index * 4 + 16, 24))
            frame = av.VideoFrame.from_image(image)
            frame.pts = index
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return path


@pytest.fixture
def clip(tmp_path: Path) -> ClipFactory:
    counter = iter(range(1_000_000))

    def make(name: str | None = None, **options: object) -> Path:
        fmt = str(options.get("fmt", "mp4"))
        suffix = {"mp4": ".mp4", "matroska": ".mkv", "h264": ".h264"}.get(fmt, "." + fmt)
        return write_clip(tmp_path / (name or f"clip{next(counter)}{suffix}"), **options)  # type: ignore[arg-type]

    return make
