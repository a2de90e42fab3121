"""Single frames out of a video, as RGB images."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import TYPE_CHECKING

from sparkspec.errors import MediaError
from sparkspec.media.probe import media_reason

if TYPE_CHECKING:
    import av
    from PIL import Image


def first_frame(path: Path) -> Image.Image:
    """The first decoded frame of the video stream."""
    import av

    try:
        with av.open(str(path), mode="r") as container:
            stream = _video_stream(container, path)
            for frame in container.decode(stream):
                return to_image(frame)
    except (av.FFmpegError, OSError, ValueError) as exc:
        raise MediaError(f"{path}: cannot decode a frame ({media_reason(exc)})") from None
    raise MediaError(f"{path}: the video stream holds no frame")


def last_frame(path: Path) -> Image.Image:
    """The last decoded frame: decoding starts at the last keyframe, not at the start."""
    import av

    try:
        with av.open(str(path), mode="r") as container:
            stream = _video_stream(container, path)
            last = None
            if stream.duration is not None:
                # Lands on the keyframe before the end; if the seek fails, start from 0.
                end = (stream.start_time or 0) + stream.duration
                try:
                    container.seek(end, stream=stream, backward=True)
                except av.FFmpegError:
                    container.seek(0, stream=stream, backward=True)
            for frame in container.decode(stream):
                last = frame
            if last is None and stream.duration is not None:
                container.seek(0, stream=stream, backward=True)
                for frame in container.decode(stream):
                    last = frame
    except (av.FFmpegError, OSError, ValueError) as exc:
        raise MediaError(f"{path}: cannot decode a frame ({media_reason(exc)})") from None
    if last is None:
        raise MediaError(f"{path}: the video stream holds no frame")
    return to_image(last)


def extract_last_frame(video: Path, dest: Path) -> tuple[str, int]:
    """Write the video's last decoded frame to `dest` as a PNG (fsynced); its sha256 and size.

    For a task that finished without a last-frame image: the PNG holds exactly the
    pixels a decoder shows last, at the video's own size.
    """
    image = last_frame(video)
    dest.parent.mkdir(parents=True, exist_ok=True)
    with dest.open("wb") as stream:
        image.save(stream, format="PNG")
        stream.flush()
        os.fsync(stream.fileno())
    digest = hashlib.sha256()
    with dest.open("rb") as stream:
        while chunk := stream.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest(), dest.stat().st_size


def to_image(frame: av.VideoFrame) -> Image.Image:
    """A decoded or built frame as an RGB image (swscale, bit-exact, one thread)."""
    from sparkspec.media.encode import scale_flags

    rgb = frame.reformat(format="rgb24", interpolation=scale_flags(), threads=1)
    image: Image.Image = rgb.to_image()  # type: ignore[no-untyped-call]
    return image


def _video_stream(container: av.container.InputContainer,
                  path: Path) -> av.video.stream.VideoStream:
    if not container.streams.video:
        raise MediaError(f"{path}: the file holds no video stream")
    return container.streams.video[0]
