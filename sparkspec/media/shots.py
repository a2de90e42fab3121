"""The local renderer's frames: a seeded scene or a camera move over a first frame.

With a first frame, a shot is a slow push-in with a drift over that image; without
one, a seeded scene of gradients, shapes and drifting lights with the prompt's words
on it. Everything is drawn from the `random.Random` it is given, so the same seed
and prompt give the same frames.

Speed: generating frames costs little more than encoding them. The scene is drawn
once, larger than the frame; each frame is an integer crop of it, scaled and turned
into YUV by one swscale call (`Shot.frame`, safe to run on a worker thread while the
encoder runs).
"""

from __future__ import annotations

import colorsys
import random
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import av
    from PIL import Image

    from sparkspec.media.encode import FrameConverter

# The scene is drawn this much larger than the frame, so the camera can move over it.
_WORLD_MARGIN = 1.25
# A first frame is pushed into by up to this zoom over the clip.
_PUSH_IN = 0.08


# -- the picture ------------------------------------------------------------------------

@dataclass(frozen=True)
class _Orb:
    """A soft light drifting across the scene, in the scene's coordinates."""

    color: Image.Image
    mask: Image.Image
    start: tuple[float, float]
    end: tuple[float, float]


@dataclass(frozen=True)
class Shot:
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


def image_shot(source: Image.Image, width: int, height: int, frames: int,
               rng: random.Random, camera_fixed: bool) -> Shot:
    """The first frame cover-fitted to the video, then a slow push-in with a drift."""
    from PIL import ImageOps

    world = ImageOps.fit(source, (width, height), method=_lanczos())
    if camera_fixed:
        return Shot(world, ((0, 0, width, height),) * frames)
    drift = (rng.uniform(-0.6, 0.6), rng.uniform(-0.6, 0.6))
    boxes = []
    for index in range(frames):
        e = _ease(index / max(1, frames - 1))
        zoom = 1 + _PUSH_IN * e
        boxes.append(_box(world.size, width / zoom, height / zoom,
                          (drift[0] * e, drift[1] * e)))
    return Shot(world, tuple(boxes))


def procedural_shot(prompt: str, width: int, height: int, frames: int,
                    rng: random.Random, camera_fixed: bool) -> Shot:
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
    return Shot(world, tuple(boxes), orbs)


def _box(world: tuple[int, int], box_w: float, box_h: float,
         at: tuple[float, float]) -> tuple[int, int, int, int]:
    """A box of about box_w x box_h inside `world`, centred at `at` (-1..1 of the slack)."""
    w, h = min(world[0], round(box_w)), min(world[1], round(box_h))
    left = round((world[0] - w) / 2 * (1 + at[0]))
    top = round((world[1] - h) / 2 * (1 + at[1]))
    return left, top, left + w, top + h


def _ease(t: float) -> float:
    return t * t * (3 - 2 * t)


def _lanczos() -> Image.Resampling:
    from PIL import Image

    return Image.Resampling.LANCZOS


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

    words = [_shortened(w) for w in prompt.split()[:25]]
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


MAX_WORD = 40  # characters of one word drawn: a 200,000-character "word" made Pillow refuse the picture


def _shortened(word: str) -> str:
    return word if len(word) <= MAX_WORD else word[:MAX_WORD - 3] + "..."


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


def stamp_watermark(frame: av.VideoFrame) -> None:
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
