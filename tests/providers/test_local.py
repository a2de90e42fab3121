"""The offline renderer and provider, on real files: sizes, frames, first frames, bytes."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import io
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import av
import pytest
from PIL import Image, ImageChops, ImageDraw, ImageOps, ImageStat

from sparkspec import apifacts
from sparkspec.errors import DownloadError, MediaError, RenderFailed, TaskNotFound, UrlExpired
from sparkspec.fsutil import sha256_file
from sparkspec.media.frames import first_frame, last_frame
from sparkspec.media.probe import probe_video
from sparkspec.providers.base import FirstFrame, RenderRequest, TaskState, TaskStatus
from sparkspec.providers.local import LocalProvider, render_video, task_id_for

KEY = "ab" * 32


def request(**changes: object) -> RenderRequest:
    base = RenderRequest(key=KEY, scene="intro", model=apifacts.MODEL,
                         prompt="A paper boat on a rain puddle", resolution="480p", ratio="16:9",
                         duration=None, frames=29, seed=7)
    return replace(base, **changes)  # type: ignore[arg-type]


def render(tmp_path: Path, name: str, req: RenderRequest) -> tuple[Path, Path]:
    video, png = tmp_path / f"{name}.mp4", tmp_path / f"{name}.png"
    render_video(req, video, png)
    return video, png


def mean_difference(one: Image.Image, other: Image.Image) -> float:
    assert one.size == other.size
    return sum(ImageStat.Stat(ImageChops.difference(one.convert("RGB"), other.convert("RGB"))).mean) / 3


def picture(size: tuple[int, int]) -> Image.Image:
    """A picture with structure everywhere, so a wrong crop or stretch shows."""
    image = Image.linear_gradient("L").resize(size).convert("RGB")
    draw = ImageDraw.Draw(image)
    w, h = size
    for i in range(0, w, w // 8):
        draw.rectangle((i, 0, i + w // 32, h), fill=(200, 40, 40))
    draw.ellipse((w // 3, h // 3, 2 * w // 3, 2 * h // 3), fill=(30, 160, 220))
    return image


def decoded_frames(path: Path) -> int:
    with av.open(str(path)) as container:
        return sum(1 for _ in container.decode(video=0))


# -- render_video -------------------------------------------------------------------------

@pytest.mark.parametrize("resolution, ratio", [
    ("480p", "16:9"), ("480p", "9:16"), ("480p", "21:9"), ("720p", "1:1"),
    pytest.param("1080p", "4:3", marks=pytest.mark.slow),  # about 1.6 s
])
@pytest.mark.slow  # over 0.7 s: the default run stays under 90 s on a fresh clone
def test_renders_the_tables_exact_size_at_24_fps(tmp_path: Path, resolution: str, ratio: str) -> None:
    video, png = render(tmp_path, "clip", request(resolution=resolution, ratio=ratio))
    size = apifacts.pixel_size(resolution, ratio)
    info = probe_video(video)
    assert (info.width, info.height) == size
    assert info.codec == "h264"
    assert info.fps == 24.0
    assert info.frames == 29
    assert info.duration == pytest.approx(29 / 24)
    with av.open(str(video)) as container:
        assert container.streams.video[0].codec_context.pix_fmt == "yuv420p"
    with Image.open(png) as last:
        assert last.format == "PNG" and last.size == size and last.mode == "RGB"


@pytest.mark.parametrize("duration, frames, expected", [(2, None, 49), (None, 33, 33)])
def test_renders_the_frame_count_of_duration_or_frames(tmp_path: Path, duration: int | None,
                                                       frames: int | None, expected: int) -> None:
    video, _ = render(tmp_path, "clip", request(duration=duration, frames=frames))
    assert probe_video(video).frames == expected
    assert decoded_frames(video) == expected
    assert probe_video(video).duration == pytest.approx(expected / 24)


def test_the_last_frame_png_is_the_videos_last_frame(tmp_path: Path) -> None:
    video, png = render(tmp_path, "clip", request())
    with Image.open(png) as handed_over:
        assert mean_difference(handed_over, last_frame(video)) < 3
        assert mean_difference(handed_over, first_frame(video)) > 3  # the camera moved


@pytest.mark.slow  # about 1.4 s
def test_the_same_request_gives_the_same_bytes(tmp_path: Path) -> None:
    for req in (request(), request(watermark=True)):
        one, two = render(tmp_path, "one", req), render(tmp_path, "two", req)
        assert one[0].read_bytes() == two[0].read_bytes()
        assert one[1].read_bytes() == two[1].read_bytes()
    other_seed = render(tmp_path, "seed", request(seed=8))
    other_prompt = render(tmp_path, "prompt", request(prompt="A lighthouse at dusk"))
    digests = {sha256_file(p[0]) for p in (one, other_seed, other_prompt)}
    assert len(digests) == 3


@pytest.mark.slow  # a whole apply or two; the default run keeps its siblings
def test_another_process_renders_the_same_bytes(tmp_path: Path) -> None:
    # Applies run in separate processes; x264 once gave other bytes from run to run.
    here = render(tmp_path, "here", request(frames=61))
    script = ("import sys; from pathlib import Path; "
              "sys.path.insert(0, sys.argv[1]); import test_local as t; "
              "from sparkspec.providers.local import render_video; "
              "render_video(t.request(frames=61), Path(sys.argv[2]), Path(sys.argv[3]))")
    there = tmp_path / "there.mp4", tmp_path / "there.png"
    subprocess.run([sys.executable, "-c", script, str(Path(__file__).parent), *map(str, there)],
                   check=True, timeout=120)
    assert here[0].read_bytes() == there[0].read_bytes()
    assert here[1].read_bytes() == there[1].read_bytes()


def test_the_watermark_marks_the_video_not_the_last_frame(tmp_path: Path) -> None:
    plain = render(tmp_path, "plain", request())
    marked = render(tmp_path, "marked", request(watermark=True))
    assert plain[1].read_bytes() == marked[1].read_bytes()
    size = apifacts.pixel_size("480p", "16:9")
    corner = (size[0] * 3 // 4, size[1] * 7 // 8, size[0], size[1])
    assert mean_difference(last_frame(marked[0]).crop(corner), last_frame(plain[0]).crop(corner)) > 5
    top = (0, 0, size[0], size[1] // 2)
    assert mean_difference(last_frame(marked[0]).crop(top), last_frame(plain[0]).crop(top)) < 1


def test_a_first_frame_opens_the_video_cover_fitted(tmp_path: Path) -> None:
    image = picture((1000, 500))  # 2:1 into 16:9: cropped left and right, not stretched
    path = tmp_path / "start.png"
    image.save(path)
    video, _ = render(tmp_path, "clip", request(first_frame=FirstFrame(path=path)))
    size = apifacts.pixel_size("480p", "16:9")
    opened = first_frame(video)
    assert mean_difference(opened, ImageOps.fit(image, size, method=Image.Resampling.LANCZOS)) < 3
    assert mean_difference(opened, image.resize(size)) > 6  # a stretch would not match
    assert mean_difference(last_frame(video), opened) > 2  # and then the camera moves


@pytest.mark.slow  # over a second: the default run stays under 90 s
def test_a_chain_continues_from_the_upstreams_last_frame(tmp_path: Path) -> None:
    a_video, a_png = render(tmp_path, "a", request())
    b_video, b_png = render(tmp_path, "b", request(prompt="The boat sails on", seed=9,
                                                  first_frame=FirstFrame(path=a_png)))
    c_video, _ = render(tmp_path, "c", request(prompt="It reaches the gutter", seed=10,
                                              first_frame=FirstFrame(path=b_png)))
    with Image.open(a_png) as handed_over:
        assert mean_difference(first_frame(b_video), handed_over) < 3
        assert mean_difference(first_frame(b_video), last_frame(a_video)) < 3
    assert mean_difference(first_frame(c_video), last_frame(b_video)) < 3
    # A control: an unrelated scene is far from the handed-over frame.
    other, _ = render(tmp_path, "other", request(prompt="A lighthouse at dusk", seed=11))
    assert mean_difference(first_frame(other), last_frame(a_video)) > 10


@pytest.mark.slow  # about 1.3 s
def test_adaptive_takes_the_nearest_ratio_of_the_first_frame(tmp_path: Path) -> None:
    for size, ratio in (((600, 900), "3:4"), ((900, 500), "16:9"), ((700, 690), "1:1")):
        path = tmp_path / f"{ratio.replace(':', 'x')}.png"
        picture(size).save(path)
        assert apifacts.nearest_ratio(*size) == ratio
        video, png = render(tmp_path, ratio.replace(":", "x"),
                            request(ratio="adaptive", first_frame=FirstFrame(path=path)))
        info = probe_video(video)
        assert (info.width, info.height) == apifacts.pixel_size("480p", ratio)
    # Without an image to measure (text to video) adaptive falls back to 16:9.
    video, _ = render(tmp_path, "none", request(ratio="adaptive"))
    assert (probe_video(video).width, probe_video(video).height) == (864, 480)


def test_a_data_url_first_frame_renders_like_the_file(tmp_path: Path) -> None:
    buffer = io.BytesIO()
    picture((800, 600)).save(buffer, format="PNG")
    path = tmp_path / "start.png"
    path.write_bytes(buffer.getvalue())
    url = "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()
    from_file = render(tmp_path, "file", request(ratio="adaptive", first_frame=FirstFrame(path=path)))
    from_url = render(tmp_path, "url", request(ratio="adaptive", first_frame=FirstFrame(url=url)))
    assert from_file[0].read_bytes() == from_url[0].read_bytes()
    assert probe_video(from_url[0]).width == apifacts.pixel_size("480p", "4:3")[0]


def test_an_https_first_frame_renders_the_seeded_scene_offline(tmp_path: Path) -> None:
    url = FirstFrame(url="https://example.invalid/start.png")
    remote = render(tmp_path, "remote", request(first_frame=url))
    plain = render(tmp_path, "plain", request())
    assert remote[0].read_bytes() == plain[0].read_bytes()


def test_apply_says_the_local_provider_cannot_fetch_an_https_first_frame(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from cli_runner import run_main

    (tmp_path / "project.spark.yaml").write_text(
        "version: 1\nprovider: {type: local}\ndefaults: {resolution: 480p, frames: 29}\n"
        "scenes:\n  a: {prompt: x, ratio: '16:9', first_frame: {image: 'https://example.invalid/a.png'}}\n")
    code, out, err = run_main(["apply", "--auto-approve"], tmp_path, monkeypatch)
    assert code == 0, out + err
    assert "a: warning: the local provider renders offline and cannot fetch the first frame " \
           "https://example.invalid/a.png" in out


def test_an_unreadable_first_frame_is_a_media_error(tmp_path: Path) -> None:
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG not really")
    with pytest.raises(MediaError, match="not a readable image"):
        render(tmp_path, "x", request(first_frame=FirstFrame(path=broken)))
    with pytest.raises(MediaError, match="cannot read"):
        render(tmp_path, "x", request(first_frame=FirstFrame(path=tmp_path / "missing.png")))
    with pytest.raises(MediaError):
        render(tmp_path, "x", request(first_frame=FirstFrame(url="data:image/png;base64,!!!")))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["broken.png"]  # no temp files left


def test_camera_fixed_keeps_a_first_frame_still(tmp_path: Path) -> None:
    path = tmp_path / "start.png"
    picture((864, 480)).save(path)
    video, _ = render(tmp_path, "still", request(camera_fixed=True, first_frame=FirstFrame(path=path)))
    assert mean_difference(first_frame(video), last_frame(video)) < 1.5


def test_progress_is_reported_up_to_one(tmp_path: Path) -> None:
    seen: list[float] = []
    render_video(request(), tmp_path / "v.mp4", tmp_path / "v.png", progress=seen.append)
    assert seen == sorted(seen) and seen[-1] == 1.0 and len(seen) >= 3


# -- LocalProvider ------------------------------------------------------------------------

async def finished(provider: LocalProvider, req: RenderRequest) -> TaskStatus:
    """Submit and poll to the end, as the engine does."""
    status = await provider.submit(req)
    while status.state is TaskState.RUNNING:
        status = await provider.poll(status.task_id)
    return status


def finish(provider: LocalProvider, req: RenderRequest) -> TaskStatus:
    return asyncio.run(finished(provider, req))


def test_submit_renders_and_download_copies_and_hashes(tmp_path: Path) -> None:
    provider = LocalProvider(tmp_path / "work")

    async def go() -> None:
        status = await provider.submit(request())
        assert status.state is TaskState.RUNNING and status.progress == 0.0  # answered at once, as the API does
        seen = []
        while status.state is TaskState.RUNNING:
            seen.append(status.progress)
            status = await provider.poll(status.task_id)
        assert status.state is TaskState.COMPLETED and seen == sorted(seen)
        assert status.task_id == "local-" + KEY[:24] == task_id_for(KEY)
        assert status.tokens == apifacts.estimate_tokens(864, 480, 29)
        assert status.seed == 7
        assert status.video_url and status.last_frame_url
        video = await provider.download(status.video_url, tmp_path / "dl" / "v.mp4.part")
        frame = await provider.download(status.last_frame_url, tmp_path / "dl" / "f.png.part")
        assert video.sha256 == hashlib.sha256(video.path.read_bytes()).hexdigest()
        assert video.size == video.path.stat().st_size > 0
        assert frame.sha256 == sha256_file(frame.path)
        assert probe_video(video.path).frames == 29
        await provider.aclose()

    asyncio.run(go())


def test_another_process_collects_a_finished_task_by_polling(tmp_path: Path) -> None:
    status = finish(LocalProvider(tmp_path / "work"), request())
    later = LocalProvider(tmp_path / "work")  # as after a crash: a fresh provider, same folder
    polled = asyncio.run(later.poll(status.task_id))
    assert polled == status


def test_a_second_submit_of_the_same_key_does_not_render_again(tmp_path: Path) -> None:
    provider = LocalProvider(tmp_path / "work")
    first = finish(provider, request())
    video = tmp_path / "work" / first.task_id / "video.mp4"
    stamp = video.stat().st_mtime_ns
    time.sleep(0.01)
    again = finish(provider, request())
    assert again == first and video.stat().st_mtime_ns == stamp


def test_a_random_seed_is_drawn_and_reported_as_upstream_does(tmp_path: Path) -> None:
    """`seed: -1` rendered every take alike offline (and recorded -1)."""
    provider = LocalProvider(tmp_path / "work")
    first = finish(provider, request(seed=-1, key="a" * 64))
    second = finish(provider, request(seed=-1, key="b" * 64))
    assert first.seed is not None and second.seed is not None
    assert 0 <= first.seed < 2**31 - 1 and first.seed != second.seed
    videos = [sha256_file(tmp_path / "work" / s.task_id / "video.mp4") for s in (first, second)]
    assert videos[0] != videos[1]
    assert asyncio.run(LocalProvider(tmp_path / "work").poll(first.task_id)).seed == first.seed  # as recorded


@pytest.mark.parametrize("task_id", ["local-" + "0" * 24, "../../etc", "local-" + "ab" * 12 + "/.."])
def test_polling_an_unknown_task_raises_task_not_found(tmp_path: Path, task_id: str) -> None:
    with pytest.raises(TaskNotFound):
        asyncio.run(LocalProvider(tmp_path / "work").poll(task_id))


def test_a_task_without_its_record_is_not_done(tmp_path: Path) -> None:
    provider = LocalProvider(tmp_path / "work")
    status = finish(provider, request())
    (tmp_path / "work" / status.task_id / "task.json").unlink()
    with pytest.raises(TaskNotFound):
        asyncio.run(provider.poll(status.task_id))


def test_a_damaged_output_is_rendered_again(tmp_path: Path) -> None:
    provider = LocalProvider(tmp_path / "work")
    status = finish(provider, request())
    video = tmp_path / "work" / status.task_id / "video.mp4"
    whole = video.read_bytes()
    video.write_bytes(whole[: len(whole) // 2])
    with pytest.raises(TaskNotFound):
        asyncio.run(provider.poll(status.task_id))
    assert finish(provider, request()) == status
    assert video.read_bytes() == whole


def test_download_serves_only_the_providers_own_files(tmp_path: Path) -> None:
    provider = LocalProvider(tmp_path / "work")
    secret = tmp_path / "secret.txt"
    secret.write_text("no")
    with pytest.raises(DownloadError, match="outside"):
        asyncio.run(provider.download(secret.as_uri(), tmp_path / "x"))
    with pytest.raises(DownloadError, match="only serves"):
        asyncio.run(provider.download("https://example.invalid/v.mp4", tmp_path / "x"))
    status = finish(provider, request())
    assert status.video_url is not None
    Path(status.video_url.removeprefix("file://")).unlink()
    with pytest.raises(UrlExpired):
        asyncio.run(provider.download(status.video_url, tmp_path / "x"))
    assert not (tmp_path / "x").exists()


def test_a_bad_first_frame_fails_the_render(tmp_path: Path) -> None:
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"nope")
    with pytest.raises(RenderFailed, match="not a readable image"):
        finish(LocalProvider(tmp_path / "work"), request(first_frame=FirstFrame(path=bad)))


def test_a_first_frame_changed_since_the_plan_fails_the_render_as_stale(tmp_path: Path) -> None:
    """Read again when the render starts: an image changed after the plan would be rendered
    and cached under the key of the one before."""
    from PIL import Image

    path = tmp_path / "frame.png"
    Image.new("RGB", (640, 360), (200, 30, 40)).save(path, "PNG")
    planned = hashlib.sha256(path.read_bytes()).hexdigest()
    Image.new("RGB", (640, 360), (20, 30, 240)).save(path, "PNG")
    with pytest.raises(RenderFailed, match=r"the plan is stale: run plan again \(.*frame.png changed since the plan\)"):
        finish(LocalProvider(tmp_path / "work"), request(first_frame=FirstFrame(path=path, sha256=planned)))


@pytest.mark.slow  # over 0.7 s: the default run stays under 90 s on a fresh clone
def test_renders_in_parallel_are_each_whole(tmp_path: Path) -> None:
    provider = LocalProvider(tmp_path / "work", max_parallel=2)
    requests = [request(key=hashlib.sha256(bytes([i])).hexdigest(), seed=i) for i in range(3)]
    requests.append(requests[0])  # the same key twice at once: rendered once

    async def go() -> list[str]:
        done = await asyncio.gather(*(finished(provider, r) for r in requests))
        return [s.task_id for s in done]

    task_ids = asyncio.run(go())
    assert len(set(task_ids)) == 3 and task_ids[0] == task_ids[3]
    for task_id in task_ids:
        assert probe_video(tmp_path / "work" / task_id / "video.mp4").frames == 29


@pytest.mark.slow  # over 0.7 s: the default run stays under 90 s on a fresh clone
def test_a_prompt_of_one_enormous_word_renders(tmp_path: Path) -> None:
    """A 200,000-character word at 1080p made Pillow refuse the picture: exit 3."""
    video, _ = render(tmp_path, "long", request(prompt="x" * 200_000, resolution="1080p", frames=25))
    assert probe_video(video).frames == 25


def test_the_local_renderer_renders_as_many_at_once_as_the_parallelism_says(tmp_path: Path) -> None:
    """It kept to one per two CPUs whatever the spec or --parallelism said."""
    from sparkspec.config.model import ProviderConfig
    from sparkspec.providers import make_provider

    provider = make_provider(ProviderConfig(type="local", parallelism=3), tmp_path, {})
    assert isinstance(provider, LocalProvider) and provider.max_parallel == 3
