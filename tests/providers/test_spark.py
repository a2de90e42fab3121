"""The API's providers against the fake on loopback: real HTTP, every mapping and fault. What holds
for every way the model is served runs against each dialect (the gateway's generation and queue
protocols, upstream's ModelArk); the generation protocol's own shapes run against it alone."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import logging
import random
import socket
from collections.abc import Awaitable, Callable
from email.utils import format_datetime
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, TypeVar

import pytest
from PIL import Image

from dialects import GENERATION, QUEUE, Dialect, every_dialect
from fakeapi import FakeSparkAPI
from sparkspec.errors import (
    AccountError,
    AuthError,
    BadFirstFrame,
    CreateUnconfirmed,
    DamagedOutput,
    RequestRejected,
    TaskNotFound,
    TransientError,
    UrlExpired,
)
from sparkspec.providers.base import FirstFrame, RenderRequest, TaskState, TaskStatus
from sparkspec.providers.spark import CreateBody, SparkProvider, api_key_from_env, parse_task
from sparkspec.providers.spark.provider import POOLS

MODEL = "spark_dance_v1_0_pro_fast"
T = TypeVar("T")


class Sleeps:
    """An injected sleep that records and returns at once: no test sleeps for real."""

    def __init__(self) -> None:
        self.calls: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)
        await asyncio.sleep(0)


def request(**changes: Any) -> RenderRequest:
    fields: dict[str, Any] = dict(key="k" * 64, scene="intro", model="", prompt="A kettle, steam rising",
                                  resolution="480p", ratio="16:9", duration=2, frames=None, seed=1234)
    fields.update(changes)
    return RenderRequest(**fields)


def run(api: FakeSparkAPI, body: Callable[[SparkProvider], Awaitable[T]], *, key: str | None = None,
        sleeps: Sleeps | None = None, base_url: str | None = None, dialect: Dialect = GENERATION,
        **options: Any) -> T:
    async def main() -> T:
        provider: SparkProvider = dialect.make(api, key, sleep=sleeps or Sleeps(), base_url=base_url,
                                               key_env=dialect.key_env, **options)
        try:
            return await body(provider)
        finally:
            await provider.aclose()

    return asyncio.run(main())


async def render(provider: SparkProvider, req: RenderRequest | None = None) -> TaskStatus:
    status = await provider.submit(req or request())
    while status.state is TaskState.RUNNING:
        await asyncio.sleep(0.01)
        status = await provider.poll(status.task_id, status.locator)
    return status


@pytest.fixture
def api(fake_api: FakeSparkAPI) -> FakeSparkAPI:
    fake_api.render_mode = "placeholder"  # these tests move bytes; the e2e tests decode real videos
    fake_api.latency = 0.05  # creates answer in_progress, so every render is queried at least once
    return fake_api


# -- the key ---------------------------------------------------------------------------------
def test_missing_key_names_the_variable_and_the_way_out() -> None:
    with pytest.raises(AuthError) as info:
        api_key_from_env("MY_SPARK_KEY", {})
    assert "MY_SPARK_KEY" in str(info.value) and "--provider local" in str(info.value)
    with pytest.raises(AuthError):
        api_key_from_env("MY_SPARK_KEY", {"MY_SPARK_KEY": "  "})


def test_a_key_a_header_cannot_carry_is_refused_without_echoing_it() -> None:
    with pytest.raises(AuthError) as info:
        api_key_from_env("SPARK_API_KEY", {"SPARK_API_KEY": "sk-abc\ndef"})
    assert "sk-abc" not in str(info.value)
    assert api_key_from_env("SPARK_API_KEY", {"SPARK_API_KEY": " sk-abc\n"}) == "sk-abc"


# -- the create body -------------------------------------------------------------------------
def test_create_body_is_exactly_the_reference_shape(api: FakeSparkAPI) -> None:
    run(api, lambda p: p.submit(request()))
    assert api.create_bodies == [{"model": MODEL, "input": [{"params": {
        "content": [{"type": "text", "text": "A kettle, steam rising"}],
        "return_last_frame": True, "resolution": "480p", "ratio": "16:9", "duration": 2,
        "seed": 1234, "camera_fixed": False, "watermark": False}}]}]


@every_dialect()
def test_frames_replace_duration_and_request_options_appear_only_when_set(api: FakeSparkAPI,
                                                                          dialect: Dialect) -> None:
    req = request(duration=None, frames=57, camera_fixed=True, watermark=True, service_tier="flex",
                  execution_expires_after=3600, callback_url="https://example.com/hook")
    run(api, dialect=dialect, body=lambda p: p.submit(req))
    params = dialect.params(api.create_bodies[0])
    assert params["frames"] == 57 and "duration" not in params
    assert (params["service_tier"], params["execution_expires_after"], params["callback_url"]) == \
        ("flex", 3600, "https://example.com/hook")
    assert params["camera_fixed"] is True and params["watermark"] is True


@pytest.mark.parametrize("url", ["https://cdn.example.com/frame.png", "data:image/png;base64,iVBORw0KGgo="])
@every_dialect()
def test_url_first_frames_pass_through(api: FakeSparkAPI, url: str, dialect: Dialect) -> None:
    run(api, dialect=dialect, body=lambda p: p.submit(request(first_frame=FirstFrame(url=url), ratio="adaptive")))
    content = dialect.params(api.create_bodies[0])["content"]
    assert content[1] == {"type": "image_url", "image_url": {"url": url}, "role": "first_frame"}


@pytest.mark.parametrize("fmt,suffix", [("PNG", "png"), ("JPEG", "jpeg"), ("WEBP", "webp")])
@every_dialect()
def test_a_local_first_frame_becomes_a_lower_case_data_url(api: FakeSparkAPI, tmp_path: Path, fmt: str,
                                                          suffix: str, dialect: Dialect) -> None:
    path = tmp_path / f"frame.{suffix}"
    Image.new("RGB", (640, 360), (200, 30, 40)).save(path, fmt)
    run(api, dialect=dialect, body=lambda p: p.submit(request(first_frame=FirstFrame(path=path))))
    content = dialect.params(api.create_bodies[0])["content"]
    assert content[1]["role"] == "first_frame"
    assert content[1]["image_url"]["url"] == \
        f"data:image/{suffix};base64," + base64.b64encode(path.read_bytes()).decode()


def test_the_body_streams_with_its_length_known_and_no_chunk_larger_than_bounded(tmp_path: Path) -> None:
    path = tmp_path / "big.png"
    data = random.Random(1).randbytes(1_000_003)
    Image.frombytes("L", (1000, 1000), data[:1_000_000]).save(path, "PNG")
    body = CreateBody.build(request(first_frame=FirstFrame(path=path), prompt='quote " and \\ sparkspec'),
                            MODEL)

    async def collect() -> list[bytes]:
        return [chunk async for chunk in body.stream()]

    chunks = asyncio.run(collect())
    joined = b"".join(chunks)
    assert len(joined) == body.length
    assert max(len(c) for c in chunks[1:-1]) <= 4 * 64 * 1024
    parsed = json.loads(joined)
    url = parsed["input"][0]["params"]["content"][1]["image_url"]["url"]
    assert base64.b64decode(url.split(",", 1)[1]) == path.read_bytes()
    assert parsed["input"][0]["params"]["content"][0]["text"] == 'quote " and \\ sparkspec'


def test_the_server_receives_exactly_the_announced_length(api: FakeSparkAPI, tmp_path: Path) -> None:
    path = tmp_path / "f.png"
    Image.new("RGB", (500, 400), (1, 2, 3)).save(path, "PNG")
    run(api, lambda p: p.submit(request(first_frame=FirstFrame(path=path))))
    assert api.create_body_bytes[0] == CreateBody.build(request(first_frame=FirstFrame(path=path)), MODEL).length


@every_dialect()
def test_a_first_frame_changed_since_the_plan_is_never_rendered_under_its_key(api: FakeSparkAPI, tmp_path: Path,
                                                                              dialect: Dialect) -> None:
    """The key was made of the file's bytes at plan time; a scene that waited for a render slot
    read the file again when it sent it. An image changed in between was rendered, and cached
    under the key of the one before. The body is cut short before its end: no task is made."""
    path = tmp_path / "frame.png"
    Image.new("RGB", (640, 360), (200, 30, 40)).save(path, "PNG")
    planned = hashlib.sha256(path.read_bytes()).hexdigest()
    Image.new("RGB", (640, 360), (20, 30, 240)).save(path, "PNG")  # changed after the plan
    with pytest.raises(BadFirstFrame, match=r"the plan is stale: run plan again \(.*frame.png changed since the plan\)"):
        run(api, dialect=dialect, body=lambda p: p.submit(request(first_frame=FirstFrame(path=path, sha256=planned))))
    assert api.total_creates == 0
    now = hashlib.sha256(path.read_bytes()).hexdigest()
    run(api, dialect=dialect, body=lambda p: p.submit(request(first_frame=FirstFrame(path=path, sha256=now))))
    assert api.total_creates == 1


@every_dialect()
def test_a_first_frame_that_is_no_image_fails_before_sending(api: FakeSparkAPI, tmp_path: Path,
                                                             dialect: Dialect) -> None:
    path = tmp_path / "frame.png"
    path.write_bytes(b"not an image")
    with pytest.raises(BadFirstFrame):
        run(api, dialect=dialect, body=lambda p: p.submit(request(first_frame=FirstFrame(path=path))))
    assert api.requests["create"] == 0


# -- the lifecycle -----------------------------------------------------------------------------
@every_dialect()
def test_a_render_completes_with_urls_tokens_and_seed(api: FakeSparkAPI, dialect: Dialect) -> None:
    api.report_seed = True
    api.latency = 0.05
    status = run(api, dialect=dialect, body=render)
    assert status.state is TaskState.COMPLETED and status.progress == 1.0
    assert status.video_url and "/video.mp4" in status.video_url
    assert status.last_frame_url and "/last.png" in status.last_frame_url
    assert status.tokens == 864 * 480 * 49 // 1024
    assert status.seed == 1234
    assert (status.created_at is not None) == (dialect is not QUEUE)  # the queue's status shows none


def test_the_upstream_dialect_is_read_too(api: FakeSparkAPI) -> None:
    api.generation_shape = "upstream"
    api.latency = 0.05
    status = run(api, render)
    assert status.state is TaskState.COMPLETED and status.video_url and status.last_frame_url
    assert status.seed == 1234 and status.tokens == 864 * 480 * 49 // 1024


@pytest.mark.parametrize("state", ["in_progress", "queued", "in_queue", "processing", "pending", "running"])
def test_every_running_status(state: str) -> None:
    status = parse_task({"id": "t1", "status": state, "progress": 0.4, "created_at": 1700000000})
    assert (status.state, status.progress, status.created_at) == (TaskState.RUNNING, 0.4, 1700000000.0)


@pytest.mark.parametrize("raw,expected", [
    ({"status": "completed", "output": [{"content": [{"type": "image", "url": "f"}, {"type": "video", "url": "v"}]}],
      "usage": {"completion_tokens": 100, "total_tokens": 120, "cost": 0.42}, "metadata": {"seed": 9}},
     dict(video_url="v", last_frame_url="f", tokens=100, cost=0.42, seed=9)),
    ({"status": "succeeded", "content": {"video_url": "v", "last_frame_url": "f"}, "usage": {"total_tokens": 120},
      "seed": 7}, dict(video_url="v", last_frame_url="f", tokens=120, seed=7)),
    ({"status": "completed", "output": [{"content": [{"type": "video", "url": "v"}]}]},
     dict(video_url="v", last_frame_url=None, tokens=None, seed=None)),
])
def test_completed_tasks(raw: dict[str, Any], expected: dict[str, Any]) -> None:
    status = parse_task({"id": "t1", **raw})
    assert status.state is TaskState.COMPLETED
    for name, value in expected.items():
        assert getattr(status, name) == value, name


@pytest.mark.parametrize("raw,code,message", [
    ({"status": "failed", "error": {"code": "003021098", "error_message": "generation failed"}},
     "003021098", "generation failed"),
    ({"status": "failed", "error": {"code": 3021099, "message": "service unavailable"}},
     "003021099", "service unavailable"),
    ({"status": "failed", "error": "content policy"}, None, "content policy"),
    ({"status": "expired"}, "expired", "the task expired"),
    ({"status": "cancelled"}, "cancelled", "the task cancelled"),
])
def test_failed_tasks(raw: dict[str, Any], code: str | None, message: str) -> None:
    status = parse_task({"id": "t1", **raw})
    assert (status.state, status.error_code, status.error_message) == (TaskState.FAILED, code, message)


def test_an_unknown_status_is_still_running_and_named() -> None:
    status = parse_task({"id": "t1", "status": "Teleporting", "progress": 0.5})
    assert (status.state, status.unknown_status, status.progress) == (TaskState.RUNNING, "teleporting", 0.5)
    assert parse_task({"id": "t1", "status": "in_progress"}).unknown_status is None


@pytest.mark.parametrize("kind,code,message", [
    ("failed", "003021098", "generation failed"),
    ("failed", "003021099", "service unavailable"),
    ("expired", None, None),
    ("cancelled", None, None),
])
@every_dialect()
def test_failed_tasks_from_the_server(api: FakeSparkAPI, kind: str, code: str | None, message: str | None,
                                      dialect: Dialect) -> None:
    api.outcome(kind, code=code, message=message)
    status = run(api, dialect=dialect, body=render)
    assert status.state is TaskState.FAILED
    assert status.error_code == (code or kind)
    assert (message or kind) in (status.error_message or "")


def test_a_plain_string_error_from_the_server(api: FakeSparkAPI) -> None:
    api.outcome("failed", message="prompt rejected", error_as_string=True)
    status = run(api, render)
    assert (status.state, status.error_code, status.error_message) == (TaskState.FAILED, None, "prompt rejected")


@every_dialect()
def test_an_unknown_task_is_task_not_found(api: FakeSparkAPI, dialect: Dialect) -> None:
    with pytest.raises(TaskNotFound):
        run(api, dialect=dialect, body=lambda p: p.poll("cgt-nope"))
    assert api.requests["query"] == 1


@every_dialect()
def test_a_forgotten_task_is_task_not_found(api: FakeSparkAPI, dialect: Dialect) -> None:
    api.latency = 10

    async def body(p: SparkProvider) -> None:
        status = await p.submit(request())
        api.forget(status.task_id)
        await p.poll(status.task_id)

    with pytest.raises(TaskNotFound):
        run(api, dialect=dialect, body=body)


# -- faults on the API -------------------------------------------------------------------------
@every_dialect()
def test_a_refused_key_is_an_auth_error_and_never_retried(api: FakeSparkAPI, dialect: Dialect) -> None:
    api.inject("create", "status", status=401, body={"message": "Invalid API key"})
    with pytest.raises(AuthError) as info:
        run(api, dialect=dialect, body=lambda p: p.submit(request()))
    assert "Invalid API key" in str(info.value) and dialect.key_env in str(info.value)
    assert api.requests["create"] == 1


@every_dialect()
def test_403_is_balance_or_permission_not_the_key(api: FakeSparkAPI, dialect: Dialect) -> None:
    api.inject("create", "status", status=403, body={"message": "permission denied for this model"})
    with pytest.raises(AccountError) as info:
        run(api, dialect=dialect, body=lambda p: p.submit(request()))
    assert "permission denied for this model" in str(info.value) and "balance" in str(info.value)
    assert api.requests["create"] == 1


@every_dialect()
def test_a_wrong_key_is_refused_by_the_server(api: FakeSparkAPI, dialect: Dialect) -> None:
    sleeps = Sleeps()
    with pytest.raises(AuthError):
        run(api, dialect=dialect, body=lambda p: p.poll("cgt-1"), key="wrong", sleeps=sleeps)
    assert sleeps.calls == [] and api.requests["query"] == 1


@every_dialect()
def test_the_key_never_reaches_a_message_even_when_the_api_echoes_it(api: FakeSparkAPI, dialect: Dialect) -> None:
    api.inject("create", "status", status=401, body={"message": f"key {api.api_key} is revoked"})
    with pytest.raises(AuthError) as info:
        run(api, dialect=dialect, body=lambda p: p.submit(request()))
    assert api.api_key not in str(info.value) and "<redacted>" in str(info.value)


@every_dialect()
def test_insufficient_credits_fails_with_the_apis_message_and_no_retry(api: FakeSparkAPI,
                                                                       dialect: Dialect) -> None:
    api.inject("create", "status", status=402, body={"message": "Insufficient credits"})
    with pytest.raises(AccountError) as info:
        run(api, dialect=dialect, body=lambda p: p.submit(request()))
    assert "Insufficient credits" in str(info.value) and "Top up" in str(info.value)
    assert api.requests["create"] == 1 and api.total_creates == 0


@every_dialect()
def test_a_4xx_with_error_field_carries_that_message(api: FakeSparkAPI, dialect: Dialect) -> None:
    api.inject("create", "status", status=400, body={"error": "ratio adaptive needs a first frame"})
    with pytest.raises(RequestRejected, match="ratio adaptive needs a first frame"):
        run(api, dialect=dialect, body=lambda p: p.submit(request()))


@pytest.mark.parametrize("endpoint", ["create", "query"])
@every_dialect()
def test_429_honours_retry_after_in_seconds(api: FakeSparkAPI, endpoint: str, dialect: Dialect) -> None:
    api.inject(endpoint, "status", status=429, body={"message": "rate limited"}, headers={"Retry-After": "3"},
               times=2)
    sleeps = Sleeps()
    status = run(api, dialect=dialect, body=render, sleeps=sleeps)
    assert status.state is TaskState.COMPLETED
    assert sleeps.calls == [3.0, 3.0]
    assert api.total_creates == 1


@every_dialect()
def test_429_honours_retry_after_as_a_date(api: FakeSparkAPI, dialect: Dialect) -> None:
    when = datetime.now(timezone.utc) + timedelta(seconds=20)
    api.inject("query", "status", status=429, headers={"Retry-After": format_datetime(when, usegmt=True)})
    sleeps = Sleeps()

    async def body(p: SparkProvider) -> TaskStatus:
        status = await p.submit(request())
        return await p.poll(status.task_id)

    run(api, dialect=dialect, body=body, sleeps=sleeps)
    assert len(sleeps.calls) == 1 and 15 <= sleeps.calls[0] <= 21


@pytest.mark.parametrize("endpoint", ["create", "query"])
@pytest.mark.parametrize("status", [500, 503])
@every_dialect()
def test_5xx_is_retried_with_growing_jittered_backoff(api: FakeSparkAPI, endpoint: str, status: int,
                                                      dialect: Dialect) -> None:
    api.inject(endpoint, "status", status=status, times=3)
    sleeps = Sleeps()
    assert run(api, dialect=dialect, body=render, sleeps=sleeps).state is TaskState.COMPLETED
    assert len(sleeps.calls) == 3
    for attempt, delay in enumerate(sleeps.calls, start=1):
        base = 0.5 * 2 ** (attempt - 1)
        assert base / 2 <= delay <= base
    assert api.total_creates == 1


@pytest.mark.parametrize("endpoint", ["create", "query"])
@pytest.mark.parametrize("code", ["003021099", 3021099])
@every_dialect()
def test_the_apis_service_unavailable_code_is_retried_under_any_error_status(api: FakeSparkAPI, endpoint: str,
                                                                             code: object, dialect: Dialect) -> None:
    """A create refused with 003021099 and HTTP 400 failed its scene, though the code is the API's
    transient "service unavailable" and an error answer makes no task."""
    api.inject(endpoint, "status", status=400, times=2,
               body={"error": {"code": code, "message": "service unavailable"}})
    sleeps = Sleeps()
    assert run(api, dialect=dialect, body=render, sleeps=sleeps).state is TaskState.COMPLETED
    assert len(sleeps.calls) == 2 and api.total_creates == 1


@every_dialect()
def test_retries_are_bounded_then_transient(api: FakeSparkAPI, dialect: Dialect) -> None:
    api.inject("query", "status", status=503, times=100)
    sleeps = Sleeps()
    with pytest.raises(TransientError) as info:
        run(api, dialect=dialect, body=lambda p: p.poll("cgt-1"), sleeps=sleeps, max_retries=4)
    assert len(sleeps.calls) == 4 and api.requests["query"] == 5
    assert "gave up after 5 attempt(s)" in str(info.value)


@every_dialect()
def test_a_long_retry_after_is_handed_to_the_engine_not_slept(api: FakeSparkAPI, dialect: Dialect) -> None:
    api.inject("query", "status", status=429, headers={"Retry-After": "3600"})
    sleeps = Sleeps()
    with pytest.raises(TransientError) as info:
        run(api, dialect=dialect, body=lambda p: p.poll("cgt-1"), sleeps=sleeps, max_wait=60)
    assert sleeps.calls == [] and info.value.retry_after == 3600


@every_dialect()
def test_a_reset_query_is_retried(api: FakeSparkAPI, dialect: Dialect) -> None:
    api.inject("query", "reset", times=2)
    sleeps = Sleeps()
    assert run(api, dialect=dialect, body=render, sleeps=sleeps).state is TaskState.COMPLETED
    assert len(sleeps.calls) == 2


@every_dialect(slow=True)
def test_a_slow_query_times_out_and_is_retried(api: FakeSparkAPI, dialect: Dialect) -> None:
    api.inject("query", "slow", delay=1.0)
    sleeps = Sleeps()
    assert run(api, dialect=dialect, body=render, sleeps=sleeps, timeout=0.3).state is TaskState.COMPLETED
    assert len(sleeps.calls) == 1


@pytest.mark.parametrize("kind", ["reset", "slow"])
@every_dialect(only=(GENERATION, QUEUE))
def test_a_create_lost_after_sending_is_not_retried_so_it_is_not_paid_twice(api: FakeSparkAPI, kind: str,
                                                                            dialect: Dialect) -> None:
    api.inject("create", kind, delay=1.0, create_task=True)
    sleeps = Sleeps()
    with pytest.raises(CreateUnconfirmed) as info:
        run(api, dialect=dialect, body=lambda p: p.submit(request()), sleeps=sleeps, timeout=0.3)
    assert "paying twice" in str(info.value)
    assert api.requests["create"] == 1 and api.total_creates == 1 and sleeps.calls == []


@every_dialect()
def test_a_504_on_create_is_not_retried_but_on_query_it_is(api: FakeSparkAPI, dialect: Dialect) -> None:
    api.inject("create", "status", status=504)
    with pytest.raises(CreateUnconfirmed):
        run(api, dialect=dialect, body=lambda p: p.submit(request()))
    assert api.requests["create"] == 1
    api.inject("query", "status", status=504)
    assert run(api, dialect=dialect, body=render).state is TaskState.COMPLETED


@every_dialect()
def test_connect_errors_are_retried_even_for_create(api: FakeSparkAPI, dialect: Dialect) -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    sleeps = Sleeps()

    async def main() -> None:
        provider = dialect.make(api, "k", base_url=f"http://127.0.0.1:{port}", sleep=sleeps, max_retries=3)
        try:
            await provider.submit(request())
        finally:
            await provider.aclose()

    with pytest.raises(TransientError, match="could not connect"):
        asyncio.run(main())
    assert len(sleeps.calls) == 3


@every_dialect()
def test_a_create_answered_with_an_unknown_status_is_still_returned_for_the_journal(api: FakeSparkAPI,
                                                                                    dialect: Dialect) -> None:
    api.inject("create", "status", status=200, body={"id": "cgt-x", "status": "warming_up"})
    status = run(api, dialect=dialect, body=lambda p: p.submit(request()))
    assert (status.task_id, status.state) == ("cgt-x", TaskState.RUNNING)


# -- downloads -----------------------------------------------------------------------------------
def completed(api: FakeSparkAPI, dialect: Dialect = GENERATION) -> TaskStatus:
    status = run(api, render, dialect=dialect)
    assert status.state is TaskState.COMPLETED and status.video_url and status.last_frame_url
    return status


def download(api: FakeSparkAPI, url: str, dest: Path, sleeps: Sleeps | None = None, **options: Any) -> Any:
    return run(api, lambda p: p.download(url, dest), sleeps=sleeps, **options)


def expected_bytes(api: FakeSparkAPI, which: str) -> bytes:
    task = next(iter(api.tasks.values()))
    assert task.render is not None
    video, frame, *_ = task.render.result()
    return (video if which == "video" else frame).read_bytes()


@every_dialect()
def test_downloads_carry_no_authorization_and_hash_while_streaming(api: FakeSparkAPI, tmp_path: Path,
                                                                   dialect: Dialect) -> None:
    status = completed(api, dialect)
    assert status.video_url and status.last_frame_url
    video = download(api, status.video_url, tmp_path / "v.part")
    frame = download(api, status.last_frame_url, tmp_path / "f.part")
    assert api.download_authorization == [None, None]
    assert all(h == f"Bearer {api.api_key}" for h in api.api_authorization)
    data = expected_bytes(api, "video")
    assert (video.path.read_bytes(), video.sha256, video.size) == (data, hashlib.sha256(data).hexdigest(), len(data))
    assert frame.path.read_bytes() == expected_bytes(api, "image")


def test_requests_go_round_several_pools_each_keeping_its_connection(api: FakeSparkAPI, tmp_path: Path) -> None:
    """httpcore scans every connection of a pool on each request: the provider spreads its calls
    over POOLS small pools, and each pool keeps its connection alive instead of opening one a call."""
    status = completed(api)
    assert status.video_url and status.last_frame_url
    api.peers.clear()
    rounds = 3 * POOLS

    async def calls(provider: SparkProvider) -> None:
        for i in range(rounds):  # one after the other: a single pool would use one connection
            await provider.poll(status.task_id)
            await provider.download(status.video_url or "", tmp_path / f"v{i}.part")

    run(api, calls)
    api_ports = {port for path, port in api.peers if not path.startswith("/files/")}
    file_ports = {port for path, port in api.peers if path.startswith("/files/")}
    assert len(api.peers) == 2 * rounds
    assert len(api_ports) == len(file_ports) == POOLS  # each pool's connection, reused round after round
    assert not api_ports & file_ports  # the file host's pools are not the API's (they carry no key)
    assert api.download_authorization[-rounds:] == [None] * rounds


@pytest.mark.parametrize("status", [404, 403])
def test_a_lapsed_url_is_url_expired_and_leaves_no_file(api: FakeSparkAPI, tmp_path: Path, status: int) -> None:
    url = completed(api).video_url
    assert url
    api.inject("video", "status", status=status, body={"message": "NoSuchKey"})
    sleeps = Sleeps()
    with pytest.raises(UrlExpired):
        download(api, url, tmp_path / "v.part", sleeps)
    assert sleeps.calls == []
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("kind", ["truncate", "short_length"])
def test_a_wrong_length_is_retried(api: FakeSparkAPI, tmp_path: Path, kind: str) -> None:
    url = completed(api).video_url
    assert url
    api.inject("video", kind, times=2)
    sleeps = Sleeps()
    got = download(api, url, tmp_path / "v.part", sleeps)
    assert got.path.read_bytes() == expected_bytes(api, "video") and len(sleeps.calls) == 2
    assert api.requests["download"] == 3


@pytest.mark.parametrize("kind", ["truncate", "short_length"])
def test_a_length_that_stays_wrong_is_bad_length_and_leaves_no_file(api: FakeSparkAPI, tmp_path: Path,
                                                                    kind: str) -> None:
    url = completed(api).video_url
    assert url
    api.inject("video", kind, times=100)
    with pytest.raises(DamagedOutput):
        download(api, url, tmp_path / "v.part", max_retries=2)
    assert api.requests["download"] == 3
    assert list(tmp_path.iterdir()) == []


def test_download_5xx_and_resets_are_retried(api: FakeSparkAPI, tmp_path: Path) -> None:
    url = completed(api).last_frame_url
    assert url
    api.inject("image", "status", status=503)
    api.inject("image", "reset")
    got = download(api, url, tmp_path / "f.part")
    assert got.path.read_bytes() == expected_bytes(api, "image")


def test_a_garbage_body_of_the_right_length_is_delivered_for_the_engine_to_reject(api: FakeSparkAPI,
                                                                                  tmp_path: Path) -> None:
    url = completed(api).video_url
    assert url
    api.inject("video", "garbage")
    got = download(api, url, tmp_path / "v.part")
    assert got.size == len(expected_bytes(api, "video")) and got.path.read_bytes() != expected_bytes(api, "video")


def test_a_cancelled_download_leaves_no_file(api: FakeSparkAPI, tmp_path: Path) -> None:
    url = completed(api).video_url
    assert url
    api.inject("video", "slow", delay=1.0)

    async def body(p: SparkProvider) -> None:
        task = asyncio.create_task(p.download(url, tmp_path / "v.part"))
        await asyncio.sleep(0.2)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    run(api, body)
    assert not (tmp_path / "v.part").exists()


# -- the debug log ---------------------------------------------------------------------------------
@every_dialect()
def test_the_debug_log_redacts_the_key_and_url_signatures(api: FakeSparkAPI, tmp_path: Path,
                                                         caplog: pytest.LogCaptureFixture, dialect: Dialect) -> None:
    caplog.set_level(logging.DEBUG, logger="sparkspec.providers.spark")
    status = completed(api, dialect)
    assert status.video_url
    download(api, status.video_url, tmp_path / "v.part")
    text = caplog.text
    assert "Authorization" in text or "authorization" in text
    assert "<redacted>" in text and api.api_key not in text and "X-Signature" not in text


def test_a_ca_bundle_is_loaded_only_for_what_speaks_tls(api: FakeSparkAPI, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """Loading the CA bundle costs ~35 ms of CPU: an http:// API's clients never speak TLS and
    load none; the download clients are made, with the one context, on the first download."""
    import httpx

    built: list[object] = []
    real = httpx.create_ssl_context

    def counted(*args: Any, **kwargs: Any) -> Any:
        context = real(*args, **kwargs)
        built.append(context)
        return context

    monkeypatch.setattr(httpx, "create_ssl_context", counted)
    secure = SparkProvider(base_url="https://api.example.invalid", api_key="sk-test")
    assert len(built) == 1  # an https API: its clients need the bundle from the start
    asyncio.run(secure.aclose())
    built.clear()

    async def render_and_download(provider: SparkProvider) -> int:
        status = await render(provider)
        assert built == []  # submit and poll against http://: no bundle
        await provider.download(status.video_url, tmp_path / "v.part")
        return len(built)

    assert run(api, render_and_download) == 1  # the downloads' clients, once, on the first download
