"""Issue 8, first contact: the API's answers in all the shapes its clients show, read without loss."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import httpx
import pytest

from fakeapi import FakeSparkAPI
from sparkspec.errors import AccountError, AuthError, TransientError, UnreadableCreate
from sparkspec.providers.base import TaskState
from sparkspec.providers.ratelimit import RateLimiter
from sparkspec.providers.retry import create_may_be_retried, read_may_be_retried
from sparkspec.providers.spark import parse_task
from sparkspec.providers.spark.apikey import redact

from test_spark import Sleeps, api, render, request, run  # noqa: F401  (api: the fixture)


# -- error bodies: the API's own words, in every nesting -------------------------------------------
@pytest.mark.parametrize("status,body,error,words", [
    (402, {"status": {"code": 402, "message": "Insufficient credits", "error_code": 40201}}, AccountError,
     ["Insufficient credits", "40201", "Top up"]),
    (400, {"status": {"code": 400, "message": "balance too low", "error_code": 40207}}, AccountError,
     ["balance too low", "40207"]),
    (400, {"error": {"code": "AccountOverdueError", "message": "The account is overdue"}}, AccountError,
     ["The account is overdue"]),
    (400, {"message": "Insufficient balance for this request"}, AccountError, ["Insufficient balance"]),
    (403, {"error": "forbidden: model not enabled"}, AccountError, ["model not enabled", "permission"]),
    (401, {"error": {"code": "AuthenticationError", "message": "The API key is invalid"}}, AuthError,
     ["The API key is invalid", "SPARK_API_KEY"]),
    (401, {"status": {"code": 401, "message": "token expired"}}, AuthError, ["token expired"]),
])
def test_refusals_stop_submitting_in_the_apis_words(api: FakeSparkAPI, status: int, body: dict[str, Any],
                                                    error: type[Exception], words: list[str]) -> None:
    api.inject("create", "status", status=status, body=body)
    sleeps = Sleeps()
    with pytest.raises(error) as info:
        run(api, lambda p: p.submit(request()), sleeps=sleeps)
    for word in words:
        assert word in str(info.value)
    assert api.requests["create"] == 1 and api.total_creates == 0 and sleeps.calls == []


def test_a_query_refused_for_money_is_an_account_error_too(api: FakeSparkAPI) -> None:
    api.latency = 30  # still rendering when the create answers, however loaded the machine: it is queried
    api.inject("query", "status", status=402, body={"error": {"code": 40203, "message": "quota exhausted"}})
    with pytest.raises(AccountError, match="quota exhausted"):
        run(api, render)


def test_a_plain_text_error_body_is_shown(api: FakeSparkAPI) -> None:
    api.inject("create", "status", status=400, body="upstream said no")
    with pytest.raises(Exception, match="upstream said no"):
        run(api, lambda p: p.submit(request()))


# -- the retry policy ------------------------------------------------------------------------------
@pytest.mark.parametrize("exc,status,headers,create,read", [
    (httpx.ConnectError("x"), None, {}, True, True),
    (httpx.ConnectTimeout("x"), None, {}, True, True),
    (httpx.ReadTimeout("x"), None, {}, False, True),
    (httpx.RemoteProtocolError("x"), None, {}, False, True),
    (None, 429, {}, True, True),
    (None, 500, {}, True, True),
    (None, 503, {}, True, True),
    (None, 504, {}, False, True),
    (None, 408, {}, False, True),
    (None, 400, {}, False, False),
    (None, 504, {"x-should-retry": "true"}, True, True),
    (None, 503, {"x-should-retry": "false"}, False, False),
    (None, 200, {"x-should-retry": "true"}, False, True),
])
def test_may_a_call_be_retried(exc: httpx.TransportError | None, status: int | None, headers: dict[str, str],
                               create: bool, read: bool) -> None:
    assert create_may_be_retried(exc, status, httpx.Headers(headers)) is create
    if status is None or status >= 300:
        assert read_may_be_retried(exc, status, httpx.Headers(headers)) is read


def test_x_should_retry_false_stops_retrying(api: FakeSparkAPI) -> None:
    api.inject("query", "status", status=503, headers={"x-should-retry": "false"}, times=5)
    sleeps = Sleeps()
    with pytest.raises(Exception, match="HTTP 503"):
        run(api, lambda p: p.poll("cgt-1"), sleeps=sleeps)
    assert sleeps.calls == [] and api.requests["query"] == 1


def test_x_should_retry_true_retries_a_create_the_server_refused(api: FakeSparkAPI) -> None:
    api.inject("create", "status", status=504, headers={"x-should-retry": "true"})
    sleeps = Sleeps()
    status = run(api, lambda p: p.submit(request()), sleeps=sleeps)
    assert status.state is TaskState.RUNNING and len(sleeps.calls) == 1 and api.total_creates == 1


def test_an_unreadable_create_answer_is_unconfirmed(api: FakeSparkAPI) -> None:
    api.inject("create", "status", status=200, body="<html>gateway</html>")
    with pytest.raises(UnreadableCreate, match="next apply"):
        run(api, lambda p: p.submit(request()))


def test_retries_give_up_as_transient(api: FakeSparkAPI) -> None:
    api.inject("query", "status", status=502, times=10)
    with pytest.raises(TransientError):
        run(api, lambda p: p.poll("cgt-1"), max_retries=2)


# -- task objects -------------------------------------------------------------------------------
@pytest.mark.parametrize("usage,tokens,cost", [
    ({"cost": "0.35", "quantity": 1, "unit_price": "0.35"}, None, 0.35),
    ({"cost": 1.5, "output_tokens": 4000, "total_tokens": 4100}, 4100, 1.5),
    ({"output_tokens": 4000}, 4000, None),
    ({"completion_tokens": "103818", "total_tokens": 2}, 103818, None),
    ({"cost": "n/a"}, None, None),
    ({"completion_tokens": -5, "total_tokens": 4100, "cost": -3}, 4100, None),  # below zero: not usage
    ({"completion_tokens": -5}, None, None),
])
def test_usage_as_reported(usage: dict[str, Any], tokens: int | None, cost: float | None) -> None:
    status = parse_task({"id": "t", "status": "completed", "usage": usage,
                         "output": [{"content": [{"type": "video", "url": "v"}]}]})
    assert (status.tokens, status.cost) == (tokens, cost)


@pytest.mark.parametrize("state", ["done", "success", "DONE", "succeeded"])
def test_done_and_success_are_completed(state: str) -> None:
    assert parse_task({"id": "t", "status": state}).state is TaskState.COMPLETED


def test_completed_with_an_error_is_failed() -> None:
    status = parse_task({"id": "t", "status": "completed", "error": {"code": 3021098, "message": "nsfw"},
                         "output": [{"content": [{"type": "video", "url": "v"}]}]})
    assert (status.state, status.error_code, status.error_message) == (TaskState.FAILED, "003021098", "nsfw")


@pytest.mark.parametrize("raw,frame", [
    ({"output": [{"content": [{"type": "video", "url": "v.mp4"}, {"type": "image", "url": "f"}]}]}, "f"),
    ({"output": [{"content": [{"url": "v.mp4?sig=1"}, {"url": "https://h/x/last.PNG?sig=2"}]}]},
     "https://h/x/last.PNG?sig=2"),
    ({"output": [{"content": [{"url": "v.mp4"}, {"url": "https://h/x/blob", "content_type": "image/png"}]}]},
     "https://h/x/blob"),
    ({"output": [{"content": [{"type": "video", "url": "v.mp4"}]}], "last_frame_url": "top"}, "top"),
    ({"output": [{"content": [{"type": "video", "url": "v.mp4", "last_frame_url": "item"}]}]}, "item"),
    ({"output": [{"content": [{"type": "video", "url": "v.mp4"}], "last_frame_url": "out"}]}, "out"),
    ({"outputs": [{"type": "video", "url": "v.mp4"}, {"type": "image", "url": "q"}]}, "q"),
    ({"content": {"video_url": "v.mp4", "last_frame_url": "up"}}, "up"),
    ({"output": [{"content": [{"type": "video", "url": "v.mp4"}]}]}, None),
])
def test_the_last_frame_wherever_it_is(raw: dict[str, Any], frame: str | None) -> None:
    status = parse_task({"id": "t", "status": "completed", **raw})
    assert status.video_url is not None and status.video_url.startswith("v.mp4")
    assert status.last_frame_url == frame


@pytest.mark.parametrize("where", ["image", "untyped", "last_frame_url"])
def test_the_fake_serves_the_last_frame_where_asked_and_it_is_found(api: FakeSparkAPI, where: str) -> None:
    api.last_frame = where
    status = run(api, render)
    assert status.last_frame_url is not None and "/last.png" in status.last_frame_url


def test_a_renamed_status_is_polled_not_failed(api: FakeSparkAPI) -> None:
    api.status_names = {"in_progress": "rendering", "completed": "done"}
    api.latency = 0.3
    status = run(api, lambda p: p.submit(request()))
    assert status.unknown_status == "rendering"
    assert run(api, render).state is TaskState.COMPLETED


# -- the debug log ------------------------------------------------------------------------------
def test_the_debug_log_shows_bodies_without_key_or_signatures(api: FakeSparkAPI,
                                                              caplog: pytest.LogCaptureFixture) -> None:
    api.inject("query", "status", status=500, body={"message": f"key {api.api_key} broke"})
    with caplog.at_level(logging.DEBUG, logger="sparkspec.providers.spark"):
        run(api, render)
    text = caplog.text
    assert '"status": "completed"' in text and "X-Signature=" not in text and "?<signed>" in text
    assert api.api_key not in text and "<redacted>" in text


def test_redact() -> None:
    text = '{"url": "https://files.example/v.mp4?X-Amz-Signature=abc&e=1", "k": "sk-1"}'
    assert redact(text, "sk-1") == '{"url": "https://files.example/v.mp4?<signed>", "k": "<redacted>"}'


def test_a_short_key_is_redacted_only_where_it_stands_alone() -> None:
    """A key of a few characters (a test's "k") took letters out of the API's own words."""
    assert redact("the task k expired; unknown key=k, x-k-y", "k") == \
        "the task <redacted> expired; unknown key=<redacted>, x-k-y"
    assert redact("prefix sk-live-abcdef123 suffix", "sk-live-abcdef123") == "prefix <redacted> suffix"
    assert redact("xsk-live-abcdef123x", "sk-live-abcdef123") == "x<redacted>x"  # a real key: everywhere


# -- the rate limiter -----------------------------------------------------------------------------
class Clock:
    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def test_no_minute_holds_more_than_the_limit() -> None:
    clock = Clock()
    limiter = RateLimiter(5, clock=clock, sleep=clock.sleep)
    times: list[float] = []

    async def main() -> None:
        async def one() -> None:
            async with limiter.request():
                times.append(clock.now)
                clock.now += 0.5  # the answer takes half a second

        await asyncio.gather(*(one() for _ in range(12)))

    asyncio.run(main())
    assert len(times) == 12 and times == sorted(times)
    for start in times:
        assert sum(1 for t in times if start <= t < start + 60) <= 5
    # a token comes back a minute after its answer: the sixth request waits for the first's
    assert times[5] == times[0] + 0.5 + 60


def test_requests_go_out_at_once_while_under_the_limit() -> None:
    clock = Clock()
    limiter = RateLimiter(3, clock=clock, sleep=clock.sleep)

    async def main() -> None:
        for step in range(6):
            clock.now = step * 25.0
            async with limiter.request():
                pass

    asyncio.run(main())
    assert clock.sleeps == []
