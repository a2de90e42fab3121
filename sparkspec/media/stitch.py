"""Sequences: clips joined end to end into one mp4.

Clips that share their codec parameters (as renders of one provider, resolution and
ratio do) are remuxed: packets are copied and their timestamps moved along, so the
sequence costs no quality and almost no time. Anything else is decoded and encoded
again at the first clip's size, letterboxed where the aspect differs. Either way the
same clips give the same bytes, and `dest` only ever holds a whole file.

Only the video stream is kept: renders carry no sound.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING

from sparkspec.errors import DiskError, MediaError
from sparkspec.fsutil import atomic_target
from sparkspec.media.encode import CONTAINER_OPTIONS, H264Writer
from sparkspec.media.probe import media_reason

if TYPE_CHECKING:
    import av
    import av.container
    import av.video.stream

# Aspects closer than this are scaled, not letterboxed: the table's sizes round to 16 px.
_SAME_ASPECT = 0.02


@dataclass(frozen=True)
class _StreamParams:
    codec: str
    width: int
    height: int
    pix_fmt: str | None
    time_base: Fraction | None
    rate: Fraction | None
    extradata: bytes | None  # SPS/PPS: a copied stream has one set for all clips


def stitch(paths: list[Path], dest: Path) -> None:
    """Write the clips in `paths`, in order, as one video at `dest` (replaced atomically)."""
    import av

    if not paths:
        raise MediaError(f"{dest}: a sequence needs at least one clip")
    try:
        params = [_params(path) for path in paths]
    except (av.FFmpegError, OSError, ValueError) as exc:
        raise MediaError(f"cannot read a clip to stitch into {dest}: {media_reason(exc)}") from None
    try:
        with atomic_target(dest) as tmp:
            if all(p == params[0] for p in params):
                _remux(paths, tmp)
            else:
                _reencode(paths, tmp, params[0])
    except (av.FFmpegError, OSError, ValueError) as exc:
        if DiskError.is_disk(exc):
            assert isinstance(exc, OSError)
            raise DiskError.from_os(exc, dest) from None
        raise MediaError(f"cannot stitch {dest.name}: {exc}") from None


def _params(path: Path) -> _StreamParams:
    import av

    with av.open(str(path), mode="r") as container:
        stream = _video_stream(container, path)
        ctx = stream.codec_context
        return _StreamParams(
            codec=ctx.name, width=ctx.width, height=ctx.height,
            pix_fmt=ctx.pix_fmt,
            time_base=Fraction(stream.time_base) if stream.time_base is not None else None,
            rate=Fraction(stream.average_rate) if stream.average_rate else None,
            extradata=ctx.extradata)


def _video_stream(container: av.container.InputContainer,
                  path: Path) -> av.video.stream.VideoStream:
    if not container.streams.video:
        raise MediaError(f"{path}: the file holds no video stream")
    return container.streams.video[0]


def _remux(paths: list[Path], tmp: Path) -> None:
    """Copy packets; each clip starts where the previous one's last frame ends."""
    import av

    with av.open(str(tmp), mode="w", format="mp4", options=dict(CONTAINER_OPTIONS)) as out:
        out_stream = None
        offset = 0  # in the clips' shared time base
        for path in paths:
            with av.open(str(path), mode="r") as clip:
                stream = _video_stream(clip, path)
                if out_stream is None:
                    out_stream = out.add_stream_from_template(stream)
                start = stream.start_time
                shift = offset - (start if start is not None else 0)
                step = _frame_step(stream)
                end = offset
                copied = 0
                for packet in clip.demux(stream):
                    if packet.size == 0 or packet.pts is None:
                        continue
                    if packet.is_corrupt:
                        raise MediaError(f"{path}: a packet is damaged; the clip is incomplete")
                    packet.pts += shift
                    packet.dts = packet.dts + shift if packet.dts is not None else None
                    end = max(end, packet.pts + (packet.duration or step))
                    packet.stream = out_stream
                    out.mux(packet)
                    copied += 1
                if copied == 0:
                    raise MediaError(f"{path}: the clip holds no frames")
                offset = end


def _frame_step(stream: av.video.stream.VideoStream) -> int:
    """One frame in the stream's time base, for packets that carry no duration."""
    if stream.average_rate and stream.time_base:
        return max(1, round(1 / (Fraction(stream.average_rate) * Fraction(stream.time_base))))
    return 1


def _reencode(paths: list[Path], tmp: Path, first: _StreamParams) -> None:
    """Decode every clip and encode it again at the first clip's size and rate."""
    import av

    rate = first.rate if first.rate else Fraction(24)
    with H264Writer(tmp, first.width, first.height, fps=rate) as writer:
        for path in paths:
            with av.open(str(path), mode="r") as clip:
                stream = _video_stream(clip, path)
                decoded = 0
                for frame in clip.decode(stream):
                    writer.write(_fit(frame, writer))
                    decoded += 1
                if decoded == 0:
                    raise MediaError(f"{path}: the clip holds no frames")


def _fit(frame: av.VideoFrame, writer: H264Writer) -> av.VideoFrame:
    width, height = writer.converter.width, writer.converter.height
    if abs(frame.width / frame.height - width / height) <= _SAME_ASPECT * width / height:
        return writer.converter.convert(frame)
    from PIL import Image, ImageOps

    from sparkspec.media.frames import to_image

    image = ImageOps.pad(to_image(frame), (width, height), method=Image.Resampling.BILINEAR,
                         color=(0, 0, 0))
    return writer.converter.from_image(image)


