"""An apply that pulls from the team's remote makes each picked take's contact-sheet strip as
soon as its pull lands, while other pulls stream, and keeps it for the review page after it,
which decodes none."""

from __future__ import annotations

import asyncio
import gc
from pathlib import Path

from PIL import Image

from applied import cached_render
from review.conftest import FRAMES, clip_bytes, frame_color, png_bytes
from sparkspec.remote.applying import RemoteApply
from sparkspec.remote.session import open_remote
from sparkspec.remote.transfer import push_render
from sparkspec.review.contact import GAP, THUMB_WIDTH
from sparkspec.state.cache import Cache, CachedRender
from sparkspec.state.journal import Journal


def pushed(tmp_path: Path, videos: list[bytes]) -> tuple[object, list[CachedRender]]:
    here = Cache(tmp_path / "here")
    frame = png_bytes(tmp_path / "last.png", (1, 2, 3))
    renders = [cached_render(here, tmp_path, video=video, frame=frame) for video in videos]
    remote = open_remote(None, tmp_path / "state", {"SPARKSPEC_REMOTE": f"file://{tmp_path}/shared"})
    assert remote is not None
    for render in renders:
        asyncio.run(push_render(remote.store, render, here, None, "unsigned"))
    return remote, renders


async def until(condition: object, seconds: float = 20) -> None:
    for _ in range(int(seconds / 0.02)):
        if condition():  # type: ignore[operator]
            return
        await asyncio.sleep(0.02)
    raise AssertionError("timed out")


def test_a_pulled_picked_take_has_its_strip_made_while_the_apply_runs(tmp_path: Path) -> None:
    videos = [clip_bytes(tmp_path / f"{base}.mp4", base) for base in (1, 2, 3)]
    remote, renders = pushed(tmp_path, videos)
    applying = RemoteApply(remote, Cache(tmp_path / "there"), Journal(tmp_path / "journal"),  # type: ignore[arg-type]
                           tmp_path / "tmp", lambda event: None, hits={r.key: r for r in renders})

    async def apply() -> None:
        # scene a and b are picked takes; b.take2 is another take (its strip is not shown)
        await asyncio.gather(applying.pull("a", renders[0].key, thumbnail=True),
                             applying.pull("b", renders[1].key, thumbnail=True),
                             applying.pull("b.take2", renders[2].key))
        await until(lambda: {renders[0].video_sha256, renders[1].video_sha256} <= applying.strips.keys())
        await asyncio.sleep(0.1)

    asyncio.run(apply())
    assert renders[2].video_sha256 not in applying.strips
    assert not (tmp_path / "state" / "review").exists()  # kept in memory, for the review page: no file
    for n, render in enumerate(renders[:2]):
        image = applying.strips[render.video_sha256].image()
        height = round(THUMB_WIDTH * 90 / 160)
        assert image.size == (3 * THUMB_WIDTH + 2 * GAP, height)
        for at, index in enumerate((0, FRAMES // 2)):  # the first and middle frame of its own video
            pixel = image.getpixel((at * (THUMB_WIDTH + GAP) + THUMB_WIDTH // 2, height // 2))
            wanted = frame_color(n + 1, index)
            assert max(abs(p - w) for p, w in zip(pixel, wanted)) <= 6, (n, index, pixel, wanted)  # type: ignore[arg-type]


def test_a_pulled_video_that_cannot_be_decoded_still_pulls(tmp_path: Path) -> None:
    """The strip is the review page's business: it reports what it cannot decode."""
    remote, renders = pushed(tmp_path, [b"not a video" * 100])
    there = Cache(tmp_path / "there")
    applying = RemoteApply(remote, there, Journal(tmp_path / "journal"), tmp_path / "tmp",  # type: ignore[arg-type]
                           lambda event: None, hits={r.key: r for r in renders})

    unhandled: list[dict[str, object]] = []  # a strip task that raised, which nobody awaits

    async def apply() -> CachedRender:
        asyncio.get_running_loop().set_exception_handler(lambda loop, context: unhandled.append(context))
        got = await applying.pull("a", renders[0].key, thumbnail=True)
        await until(lambda: not applying._strip_tasks)
        return got

    assert asyncio.run(apply()) == renders[0]
    gc.collect()
    assert unhandled == []
    assert there.lookup(renders[0].key) == renders[0]
    assert applying.strips == {}
