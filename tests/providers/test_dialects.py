"""The three dialects of the model's API against the fake on loopback: the gateway's generation
and queue protocols and upstream's ModelArk; what each sends, how each is read, how a queued
task is cancelled and how ModelArk finds a task whose create answer was lost."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest

from dialects import ARK, QUEUE, Dialect, every_dialect
from fakeapi import FakeSparkAPI
from sparkspec.errors import AccountError, AuthError, ProviderError, RequestRejected, TaskNotFound
from sparkspec.providers.base import RenderRequest, TaskState, TaskStatus
from sparkspec.state.journal import Journal

T = TypeVar("T")


async def no_sleep(seconds: float) -> None:
    await asyncio.sleep(0)


def request(**changes: Any) -> RenderRequest:
    fields: dict[str, Any] = dict(key="k" * 64, scene="intro", model="", prompt="A kettle, steam rising",
                                  resolution="480p", ratio="16:9", duration=2, frames=None, seed=1234)
    fields.update(changes)
    return RenderRequest(**fields)


def run(api: FakeSparkAPI, dialect: Dialect, body: Callable[[Any], Awaitable[T]], **options: Any) -> T:
    async def main() -> T:
        provider = dialect.make(api, **{"sleep": no_sleep, **options})
        try:
            return await body(provider)
        finally:
            await provider.aclose()

    return asyncio.run(main())


async def render(provider: Any, req: RenderRequest | None = None) -> TaskStatus:
    status = await provider.submit(req or request())
    while status.state is TaskState.RUNNING:
        await asyncio.sleep(0.01)
        status = await provider.poll(status.task_id, status.locator)
    return status


@pytest.fixture
def api(fake_api: FakeSparkAPI) -> FakeSparkAPI:
    fake_api.render_mode = "placeholder"
    fake_api.latency = 0.05
    return fake_api


@every_dialect()
def test_a_render_completes_in_every_dialect(api: FakeSparkAPI, dialect: Dialect) -> None:
    status = run(api, dialect, render)
    assert status.state is TaskState.COMPLETED and status.video_url and status.last_frame_url
    assert status.tokens == 864 * 480 * 49 // 1024
    task, = api.tasks.values()
    assert task.dialect == dialect.name and task.model == dialect.model and status.task_id == task.id
    assert dialect.params(api.create_bodies[0]) == task.params
    assert task.params["content"] == [{"type": "text", "text": "A kettle, steam rising"}]


def test_the_queue_protocol_sends_bare_parameters_and_journals_the_urls_it_was_given(api: FakeSparkAPI) -> None:
    status = run(api, QUEUE, lambda p: p.submit(request()))
    body, = api.create_bodies
    assert "model" not in body and "input" not in body and body["seed"] == 1234 and body["return_last_frame"]
    locator = json.loads(status.locator or "")
    assert locator["status_url"].startswith(api.base_url + "/model/v1/queue/spark_dance_v1_0_pro_fast/requests/")
    assert {"response_url", "cancel_url"} <= set(locator)
    # The journal keeps the locator with the id, so a later apply reads the task where it lives.
    journal = Journal(Path(api._dir) / "journal")
    journal.record("k" * 64, "intro", "spark", status.task_id, 3600, locator=status.locator)
    entry = journal.get("k" * 64)
    assert entry is not None and entry.locator == status.locator


def test_queue_urls_on_another_origin_are_not_followed_with_the_key(api: FakeSparkAPI) -> None:
    async def body(p: Any) -> TaskStatus:
        status = await p.submit(request())
        foreign = json.dumps({"model": "spark_dance_v1_0_pro_fast", "status_url": "https://evil.example/s",
                              "response_url": "https://evil.example/r", "cancel_url": "https://evil.example/c"})
        # the CLI's layout on the gateway instead, polled until it ends (a loaded machine may take
        # longer than the fake's latency to finish the render)
        deadline = time.monotonic() + 30
        status = await p.poll(status.task_id, foreign)
        while status.state is TaskState.RUNNING and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
            status = await p.poll(status.task_id, foreign)
        return status

    assert run(api, QUEUE, body).state is TaskState.COMPLETED


@pytest.mark.parametrize("kind", ["completed_with_error", "failed"])
def test_a_queue_request_completed_with_an_error_has_failed(api: FakeSparkAPI, kind: str) -> None:
    api.outcome(kind, code="003021098", message="the crane is too pointy")
    status = run(api, QUEUE, render)
    assert status.state is TaskState.FAILED and "the crane is too pointy" in (status.error_message or "")


def test_ark_sends_the_model_and_parameters_side_by_side(api: FakeSparkAPI) -> None:
    run(api, ARK, lambda p: p.submit(request()))
    body, = api.create_bodies
    assert body["model"] == "seedance-1-0-pro-fast-251015" and body["duration"] == 2 and "input" not in body


def test_ark_errors_show_the_apis_words_and_a_refused_key_stops(api: FakeSparkAPI) -> None:
    api.inject("create", "status", status=401,
               body={"error": {"code": "AuthenticationError", "message": "the API key is invalid"}})
    with pytest.raises(AuthError, match="the API key is invalid"):
        run(api, ARK, lambda p: p.submit(request()))
    api.inject("create", "status", status=429, times=2,
               body={"error": {"code": "RateLimitExceeded.EndpointRPMExceeded", "message": "slow down"}})
    assert run(api, ARK, render).state is TaskState.COMPLETED
    assert api.total_creates == 1


ARK_CODES = [
    # (the code, a status a proxy may pass it on with, the error, words the user sees)
    ("AuthenticationError", 401, AuthError, ["ARK_API_KEY"]),
    ("AuthenticationError", 400, AuthError, ["ARK_API_KEY"]),
    ("AccountOverdueError", 403, AccountError, ["out of credits", "Top up"]),
    ("AccountOverdueError", 500, AccountError, ["out of credits"]),
    ("OperationDenied.ServiceOverdue", 403, AccountError, ["out of credits"]),
    ("AccessDenied", 403, AccountError, ["permission denied"]),
    ("ModelNotOpen", 404, AccountError, ["permission denied"]),
    ("InvalidParameter", 400, RequestRejected, ["refused the request"]),
    ("InputTextSensitiveContentDetected", 400, RequestRejected, ["refused the request"]),
    ("InputImageSensitiveContentDetected", 500, RequestRejected, ["refused the request"]),
]


@pytest.mark.parametrize("code,status,error,words", ARK_CODES, ids=[f"{c[0]}-{c[1]}" for c in ARK_CODES])
def test_ark_text_codes_decide_the_error_whatever_the_status(api: FakeSparkAPI, code: str, status: int,
                                                             error: type[Exception], words: list[str]) -> None:
    """On a create and on a query: the code is read, the API's message shown, nothing retried."""
    body = {"error": {"code": code, "message": f"ark says {code}", "param": "", "type": "Forbidden"}}
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    api.inject("create", "status", status=status, body=body, headers={"x-should-retry": "true"})
    with pytest.raises(error) as info:
        run(api, ARK, lambda p: p.submit(request()), sleep=sleep, key_env="ARK_API_KEY")
    assert type(info.value) is error and f"ark says {code}" in str(info.value) and code in str(info.value)
    assert all(word in str(info.value) for word in words)
    assert api.requests["create"] == 1 and api.total_creates == 0 and slept == []
    if error is RequestRejected:
        return
    task_id = run(api, ARK, lambda p: p.submit(request())).task_id
    api.inject("query", "status", status=status, body=body)
    with pytest.raises(error):
        run(api, ARK, lambda p: p.poll(task_id), sleep=sleep)
    assert slept == []


def test_ark_codes_not_its_own_follow_the_shared_rules(api: FakeSparkAPI) -> None:
    """A gateway's words still count on ModelArk (a 402 with no text code), and a 404 of a task
    is still "not visible yet"."""
    api.inject("create", "status", status=402, body={"message": "Insufficient balance"})
    with pytest.raises(AccountError, match="Insufficient balance"):
        run(api, ARK, lambda p: p.submit(request()))
    with pytest.raises(TaskNotFound):
        run(api, ARK, lambda p: p.poll("cgt-never-made"))


def test_ark_adopts_the_one_task_a_lost_create_made(api: FakeSparkAPI) -> None:
    api.inject("create", "reset", create_task=True)
    status = run(api, ARK, lambda p: render(p, request(seed_derived=True)))
    made, = api.tasks.values()
    assert status.state is TaskState.COMPLETED and status.task_id == made.id
    assert api.total_creates == 1 and api.requests["list"] == 1


def test_ark_adopts_nothing_when_several_tasks_could_be_it(api: FakeSparkAPI) -> None:
    async def body(p: Any) -> None:
        api.create(dict(api_params(), seed=1234), "seedance-1-0-pro-fast-251015", "ark")  # another client's twin
        api.inject("create", "reset", create_task=True)
        await p.submit(request(seed_derived=True))

    with pytest.raises(ProviderError, match="2 tasks of seedance-1-0-pro-fast-251015 .* none was adopted"):
        run(api, ARK, body)
    assert api.total_creates == 2


def test_ark_adopts_nothing_when_no_task_fits(api: FakeSparkAPI) -> None:
    async def body(p: Any) -> None:
        api.create(dict(api_params(), seed=99), "seedance-1-0-pro-fast-251015", "ark")  # other parameters
        api.inject("create", "reset")  # lost before any task was made
        await p.submit(request(seed_derived=True))

    with pytest.raises(ProviderError, match="no task of .* was created then"):
        run(api, ARK, body)


@pytest.mark.slow  # over a second and a half: the default run stays under 90 s
def test_ark_adopts_nothing_while_a_create_of_the_same_parameters_waits_for_its_answer(api: FakeSparkAPI) -> None:
    """Another scene's create (same seed from `defaults`) had made its task and not answered yet:
    the lost create adopted that task, and two scenes were locked with one scene's video."""
    async def body(p: Any) -> None:
        api.inject("create", "late", delay=2.0)  # the first create: its task made at once, answered late
        api.inject("create", "reset")  # the second: lost before any task was made
        other = asyncio.ensure_future(p.submit(request(scene="other", prompt="A teapot, lid rattling")))
        while not api.tasks:
            await asyncio.sleep(0.01)
        with pytest.raises(ProviderError, match="another create of these parameters in this apply is still waiting"):
            await p.submit(request(seed_derived=True))
        assert (await other).task_id == next(iter(api.tasks))

    run(api, ARK, body)


def test_ark_looks_up_no_task_for_a_seed_the_spec_gives(api: FakeSparkAPI) -> None:
    """A teammate on the same account made a task with the spec's seed just before the lost
    create: the list shows its parameters, not its prompt, so it was adopted and its video
    locked as this scene's. A seed the spec gives tells no task apart: nothing is looked up."""
    async def body(p: Any) -> None:
        teammate = dict(api_params(), seed=1234, content=[{"type": "text", "text": "A red car"}])
        api.create(teammate, "seedance-1-0-pro-fast-251015", "ark")
        api.inject("create", "reset")  # lost before any task was made
        await p.submit(request())

    with pytest.raises(ProviderError, match="not looked up: its seed is the spec's own"):
        run(api, ARK, body)
    assert api.total_creates == 1 and api.requests["list"] == 0


def api_params() -> dict[str, Any]:
    return {"content": [{"type": "text", "text": "A kettle, steam rising"}], "return_last_frame": True,
            "resolution": "480p", "ratio": "16:9", "duration": 2, "camera_fixed": False, "watermark": False}


@every_dialect(only=(QUEUE, ARK))
def test_a_queued_task_is_cancelled_and_a_running_one_is_not(api: FakeSparkAPI, dialect: Dialect) -> None:
    api.latency = 30.0

    async def body(p: Any) -> tuple[bool, bool]:
        api.queue_time = 30.0
        queued = await p.submit(request())
        api.queue_time = 0.0
        running = await p.submit(request(seed=5))
        return (await p.cancel_queued(queued.task_id, queued.locator),
                await p.cancel_queued(running.task_id, running.locator))

    assert run(api, dialect, body) == (True, False)
    by_seed = {t.params["seed"]: t for t in api.tasks.values()}
    assert by_seed[1234].cancelled and not by_seed[5].cancelled


class Recorder(httpx.AsyncBaseTransport):
    """The real transport, noting when each request went out and when its answer came back."""

    def __init__(self) -> None:
        self.inner = httpx.AsyncHTTPTransport()
        self.log: list[tuple[float, float, str, int]] = []  # (sent, answered, path, status)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        sent = time.monotonic()
        response = await self.inner.handle_async_request(request)
        self.log.append((sent, time.monotonic(), request.url.path, response.status_code))
        return response

    async def aclose(self) -> None:
        await self.inner.aclose()


@pytest.mark.slow  # over 0.7 s: the default run stays under 90 s on a fresh clone
@every_dialect(slow=True)
def test_a_429_with_retry_after_holds_every_tasks_requests(api: FakeSparkAPI, dialect: Dialect) -> None:
    """The limit is the account's: once one task hears 429 Retry-After: 1, no task of the apply
    sends anything until that second has passed (the provider's real sleep, real clock). Requests
    already handed to the transport when the 429 was read are on their way and not called back."""
    api.latency = 0.3  # every task is still being polled when the 429 comes
    api.inject("query", "status", status=429, headers={"Retry-After": "1"},
               body={"error": {"code": "RateLimitExceeded.EndpointRPMExceeded", "message": "slow down"}})
    recorder = Recorder()
    pauses: list[float] = []  # when each wait of the Retry-After began

    async def sleep(seconds: float) -> None:
        pauses.append(time.monotonic())
        await asyncio.sleep(seconds)

    async def three(provider: Any) -> list[TaskStatus]:
        return list(await asyncio.gather(*(render(provider, request(seed=seed)) for seed in (1, 2, 3))))

    done = run(api, dialect, three, sleep=sleep, transport=recorder)
    assert [s.state for s in done] == [TaskState.COMPLETED] * 3 and api.total_creates == 3
    (_, heard, refused_path, _), = [entry for entry in recorder.log if entry[3] == 429]
    paused, = pauses
    assert heard <= paused
    later = [(sent, path) for sent, _, path, _ in recorder.log if sent > paused]
    assert later and all(sent >= paused + 1.0 for sent, _ in later), (paused, later[:3])
    assert len({path for _, path in later} - {refused_path}) >= 2  # the other tasks waited too, not just it
