from __future__ import annotations

import hashlib
from pathlib import Path

import av
import pytest

from sparkspec.errors import MediaError
from sparkspec.media.frames import first_frame, last_frame
from sparkspec.media.probe import probe_video
from sparkspec.media.stitch import stitch

from conftest import ClipFactory, color_for, mean_difference, write_clip


def packets(path: Path) -> list[bytes]:
    with av.open(str(path)) as container:
        return [bytes(p) for p in container.demux(video=0) if p.size]


def decoded(path: Path) -> int:
    with av.open(str(path)) as container:
        return sum(1 for _ in container.decode(video=0))


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("preset", ["ultrafast", "medium"])
def test_clips_that_match_are_copied_not_encoded_again(clip: ClipFactory, tmp_path: Path,
                                                       preset: str) -> None:
    parts = [clip(frames=n, preset=preset) for n in (12, 7, 29)]
    dest = tmp_path / "out" / "film.mp4"
    stitch(parts, dest)
    info = probe_video(dest)
    assert (info.width, info.height, info.fps) == (320, 240, 24.0)
    assert info.frames == decoded(dest) == 12 + 7 + 29
    assert info.duration == pytest.approx(48 / 24)
    # (an mp4 with B-frames reports its duration through an edit list, in milliseconds)
    assert info.duration == pytest.approx(sum(probe_video(p).duration for p in parts), abs=0.005)
    # Stream copy: the very packets of the clips, in order.
    assert packets(dest) == [p for part in parts for p in packets(part)]
    assert mean_difference(last_frame(dest), last_frame(parts[-1])) == 0


@pytest.mark.parametrize("preset", ["ultrafast", "medium"])
def test_timestamps_run_on_across_the_joins(clip: ClipFactory, tmp_path: Path, preset: str) -> None:
    parts = [clip(frames=5, preset=preset), clip(frames=5, preset=preset)]
    dest = tmp_path / "film.mp4"
    stitch(parts, dest)
    with av.open(str(dest)) as container:
        stream = container.streams.video[0]
        times = [float(f.pts * stream.time_base) for f in container.decode(stream)]
    assert times == pytest.approx([i / 24 for i in range(10)])


def test_clips_that_differ_are_encoded_again_at_the_first_ones_size(clip: ClipFactory,
                                                                     tmp_path: Path) -> None:
    wide = clip(width=320, height=240, frames=10)
    square = clip(width=200, height=200, frames=6)
    small = clip(width=160, height=120, frames=4)  # same aspect as the first: scaled, no bars
    dest = tmp_path / "mixed.mp4"
    stitch([wide, square, small], dest)
    info = probe_video(dest)
    assert (info.width, info.height) == (320, 240)
    assert info.frames == decoded(dest) == 20
    assert info.duration == pytest.approx(20 / 24)
    with av.open(str(dest)) as container:
        frames = [f.to_image() for f in container.decode(video=0)]
    # The square clip is letterboxed: black bars left and right, its colour in the middle.
    square_frame = frames[10]
    assert max(square_frame.getpixel((5, 120))) < 30  # type: ignore[arg-type]
    middle = square_frame.getpixel((160, 200))
    assert all(abs(a - b) < 12 for a, b in zip(middle, color_for(0)))  # type: ignore[arg-type]
    assert mean_difference(frames[-1].crop((40, 40, 300, 230)),
                           last_frame(small).resize((320, 240)).crop((40, 40, 300, 230))) < 6


@pytest.mark.parametrize("same", [True, False])
def test_the_same_clips_give_the_same_bytes(clip: ClipFactory, tmp_path: Path, same: bool) -> None:
    parts = [clip(frames=8), clip(frames=8, width=320 if same else 240)]
    stitch(parts, tmp_path / "one.mp4")
    stitch(parts, tmp_path / "two.mp4")
    assert digest(tmp_path / "one.mp4") == digest(tmp_path / "two.mp4")


def test_dest_is_replaced_whole_and_nothing_is_left_behind_on_error(clip: ClipFactory,
                                                                     tmp_path: Path) -> None:
    out = tmp_path / "renders"
    dest = out / "film.mp4"
    stitch([clip(frames=4)], dest)
    before = dest.read_bytes()
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(b"not a video at all" * 100)
    with pytest.raises(MediaError):
        stitch([clip(frames=4), garbage], dest)
    with pytest.raises(MediaError):
        stitch([clip(frames=4), tmp_path / "missing.mp4"], dest)
    with pytest.raises(MediaError):
        stitch([], dest)
    assert dest.read_bytes() == before
    assert sorted(p.name for p in out.iterdir()) == ["film.mp4"]
    stitch([clip(frames=6)], dest)
    assert probe_video(dest).frames == 6
    assert dest.stat().st_mode & 0o777 == 0o644


def test_a_single_clip_stitches_to_itself(tmp_path: Path) -> None:
    one = write_clip(tmp_path / "one.mp4", frames=9)
    stitch([one], tmp_path / "film.mp4")
    assert packets(tmp_path / "film.mp4") == packets(one)
    assert mean_difference(first_frame(tmp_path / "film.mp4"), first_frame(one)) == 0
