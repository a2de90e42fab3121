"""The one H.264 configuration sparkspec writes with, and the writer that applies it.

The local renderer, `stitch`'s re-encode path and the benchmark all encode through
`H264Writer`, so a setting changed here changes all three and the benchmark keeps
measuring what users run.

Determinism: the same frames give the same bytes. libx264's output depends on its
thread count, so the count is fixed rather than auto-detected; and with its
macroblock tree on (the default) the bundled build was seen to give different bytes
for the same frames from run to run, so it is off (`mbtree=0`: a few percent more
bits, no run-to-run drift; tests/media check it). The muxer runs bit-exact (no library
version or creation time in the file), and RGB to YUV conversion asks swscale for
bit-exact, accurately rounded output on one thread.
"""

from __future__ import annotations

import contextlib
from fractions import Fraction
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Final

from sparkspec.apifacts import FPS

if TYPE_CHECKING:
    import av
    from PIL import Image

CODEC: Final = "libx264"
PIX_FMT: Final = "yuv420p"
# A fixed count, not auto: x264's output depends on it. Two keeps one render from
# hogging a machine while several scenes render side by side.
ENCODER_THREADS = 2
X264_OPTIONS = {
    "preset": "superfast",
    "crf": "20",
    "threads": str(ENCODER_THREADS),
    "x264-params": "bframes=0:mbtree=0",
}
BT601 = 6  # AVCOL_SPC_SMPTE170M, AVCOL_PRI_SMPTE170M and AVCOL_TRC_SMPTE170M alike
LIMITED_RANGE = 1  # AVCOL_RANGE_MPEG
# faststart puts the index first so the preview page can play a file while it loads.
CONTAINER_OPTIONS = {"fflags": "+bitexact", "movflags": "+faststart"}


def scale_flags() -> int:
    """swscale flags for every resize and RGB to YUV conversion: bilinear, bit-exact."""
    from av.video.reformatter import Interpolation

    return int(Interpolation.BILINEAR | Interpolation.BITEXACT | Interpolation.ACCURATE_RND)


class FrameConverter:
    """Scales and converts frames to the encoder's format, reusing one swscale context."""

    def __init__(self, width: int, height: int) -> None:
        from av.video.reformatter import ColorRange, Colorspace, VideoReformatter

        self.width = width
        self.height = height
        self._reformatter = VideoReformatter()
        self._flags = scale_flags()
        self._colorspace = Colorspace.ITU601
        self._range = ColorRange.MPEG

    def from_image(self, image: Image.Image) -> av.VideoFrame:
        """`image` (RGB, any size) scaled to the output size as a yuv420p frame."""
        import av

        frame: av.VideoFrame = av.VideoFrame.from_image(image)  # type: ignore[no-untyped-call]
        return self.convert(frame)

    def convert(self, frame: av.VideoFrame) -> av.VideoFrame:
        """Any frame, decoded or built, to the output: its own range in, BT.601 out."""
        return self._reformatter.reformat(
            frame, self.width, self.height, PIX_FMT, interpolation=self._flags, threads=1,
            src_color_range=frame.color_range, dst_colorspace=self._colorspace,
            dst_color_range=self._range)


class H264Writer:
    """An mp4 with one H.264 stream; frames get consecutive timestamps at `fps`.

    Write to a temporary path: the file is only whole once `close` returned.
    """

    def __init__(self, path: Path, width: int, height: int,
                 fps: int | Fraction = FPS) -> None:
        import av

        self.path = path
        self.frames = 0
        self._time_base = 1 / Fraction(fps)
        self.converter = FrameConverter(width, height)
        self._container = av.open(str(path), mode="w", format="mp4",
                                  options=dict(CONTAINER_OPTIONS))
        try:
            stream = self._container.add_stream(CODEC, rate=fps, options=dict(X264_OPTIONS))
            stream.width = width
            stream.height = height
            stream.pix_fmt = PIX_FMT
            stream.codec_context.thread_count = ENCODER_THREADS
            # swscale's default conversion is BT.601 limited range; say so in the stream,
            # or players guess BT.709 for HD sizes and shift the colours.
            stream.codec_context.colorspace = BT601
            stream.codec_context.color_primaries = BT601
            stream.codec_context.color_trc = BT601
            stream.codec_context.color_range = LIMITED_RANGE
        except BaseException:
            self._container.close()
            raise
        self._stream = stream

    def write(self, frame: av.VideoFrame) -> None:
        """Encode one frame; it must already be `PIX_FMT` at the output size."""
        # A decoded frame keeps its source's clock; the encoder would rescale from it.
        frame.time_base = self._time_base
        frame.pts = self.frames
        self.frames += 1
        self._container.mux(self._stream.encode(frame))

    def close(self) -> None:
        """Flush the encoder and finish the file."""
        try:
            self._container.mux(self._stream.encode(None))
        finally:
            self._container.close()

    def abort(self) -> None:
        """Give the file up after a failure; the failure itself is what gets reported."""
        import av

        try:
            with contextlib.suppress(av.FFmpegError, OSError):
                self._container.close()
        finally:
            self.path.unlink(missing_ok=True)

    def __enter__(self) -> H264Writer:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()
