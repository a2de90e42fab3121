"""Local render speed against a plain encode (issue 3): the render may take at most 2x.

Both sides run in this one process, interleaved, several rounds, and the medians are
compared, so a busy machine slows both alike:

- render: `sparkspec.providers.local.render_video` of a 5 s 720p 16:9 text-to-video
  request (121 frames at 1248x704), mp4 and last-frame PNG written.
- plain encode: what a plain PyAV program does with one constant image (the render's
  own last frame): 121 times `av.VideoFrame.from_image(image)` into `stream.encode`
  (PyAV converts RGB to yuv420p), same size, same encoder settings
  (`sparkspec.media.encode`: codec, x264 options, threads, container options).
- plain encode, frame converted once: the same with the conversion hoisted out of the
  loop, so only x264 on a still picture is timed; a stricter reference, for information.
- render from a first frame: the same request chained from the render's last-frame
  PNG (the other way frames are made: a push-in over an image), for information.

Run: /tmp/venv/bin/python benchmarks/local_render_bench.py [--rounds N] [--resolution R]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import av
from PIL import Image

from sparkspec import apifacts
from sparkspec.media.encode import (
    CODEC,
    CONTAINER_OPTIONS,
    ENCODER_THREADS,
    PIX_FMT,
    X264_OPTIONS,
)
from sparkspec.providers.base import FirstFrame, RenderRequest
from sparkspec.providers.local import render_video

LIMIT = 2.0


def request(resolution: str) -> RenderRequest:
    return RenderRequest(key="bench", scene="bench", model=apifacts.MODEL,
                         prompt="An espresso machine on a marble counter, morning light, "
                                "steam rising from a fresh cup",
                         resolution=resolution, ratio="16:9", duration=5, frames=None, seed=1234)


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description="Local render speed against a plain encode.")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--resolution", default="720p", choices=apifacts.RESOLUTIONS)
    args = parser.parse_args()
    req = request(args.resolution)
    width, height = apifacts.pixel_size(req.resolution, req.ratio)
    frames = apifacts.frame_count(req.duration, req.frames)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        video, png = out / "render.mp4", out / "render.png"
        render_video(req, video, png)  # warm-up; its last frame is the constant image
        with Image.open(png) as opened:
            image = opened.convert("RGB")

        chained_from = out / "upstream.png"
        chained_from.write_bytes(png.read_bytes())
        chained = replace(req, ratio="adaptive", first_frame=FirstFrame(path=chained_from))

        def render() -> None:
            render_video(req, video, png)

        def render_chained() -> None:
            render_video(chained, out / "chained.mp4", out / "chained.png")

        def plain(convert_once: bool = False) -> None:
            with av.open(str(out / "plain.mp4"), mode="w", format="mp4",
                         options=dict(CONTAINER_OPTIONS)) as container:
                stream = container.add_stream(CODEC, rate=apifacts.FPS, options=dict(X264_OPTIONS))
                stream.width, stream.height, stream.pix_fmt = width, height, PIX_FMT
                stream.codec_context.thread_count = ENCODER_THREADS
                from_image = av.VideoFrame.from_image
                once = from_image(image).reformat(format=PIX_FMT)  # type: ignore[no-untyped-call]
                for index in range(frames):
                    frame = once if convert_once else from_image(image)  # type: ignore[no-untyped-call]
                    frame.pts = index
                    container.mux(stream.encode(frame))
                container.mux(stream.encode(None))

        times: dict[str, list[float]] = {"render": [], "plain": [], "plain_once": [],
                                         "chained": []}
        for _ in range(args.rounds):
            times["plain"].append(timed(plain))
            times["render"].append(timed(render))
            times["plain_once"].append(timed(lambda: plain(convert_once=True)))
            times["chained"].append(timed(render_chained))
    med = {name: statistics.median(values) for name, values in times.items()}
    low = {name: min(values) for name, values in times.items()}
    ratio = med["render"] / med["plain"]
    print(f"{frames} frames at {width}x{height}, {CODEC} {X264_OPTIONS}, {args.rounds} rounds")
    for name, label in (("render", "local render"), ("plain", "plain encode"),
                        ("plain_once", "plain encode, frame converted once"),
                        ("chained", "local render from a first frame")):
        print(f"  {label:36s} median {med[name]:.3f} s  min {low[name]:.3f} s  "
              f"({frames / med[name]:.0f} fps)")
    print(f"ratio render / plain encode: {ratio:.2f} (medians), "
          f"{low['render'] / low['plain']:.2f} (minima); limit {LIMIT:.1f}")
    print(f"ratio render / plain encode, frame converted once: "
          f"{med['render'] / med['plain_once']:.2f} (medians)")
    print(f"ratio render from a first frame / plain encode: "
          f"{med['chained'] / med['plain']:.2f} (medians)")
    return 0 if ratio <= LIMIT else 1


if __name__ == "__main__":
    sys.exit(main())
