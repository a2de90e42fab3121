"""The gateway's two protocols: generation (reference section 5) and queue (section 7).

Queue: `POST {base}/model/v1/queue/{model}` with the bare parameters is answered with a
`request_id` and the URLs of the request's status, response and cancel. The request id is
the task id; the three URLs are its locator, journalled beside the id, so a later apply
reads the task where the gateway said it lives instead of guessing. The URLs are only
followed on the gateway's own origin (the key travels with them); elsewhere, or when the
answer gave none, the operator's CLI's layout is used (`/model/v1/queue/{model}/requests/
{id}/status`, `/response`, `/cancel`).

The status URL says IN_QUEUE, IN_PROGRESS or COMPLETED (a COMPLETED with an `error` is a
failure); the response URL of a completed request holds `outputs[]` of `{type, url,
content_type, width, height}`, read like the generation protocol's output items. A request
still IN_QUEUE costs nothing yet and can be cancelled with `PUT {cancel_url}`
(`cancel_queued`, used by Ctrl-C). Tasks journalled without a locator were made through
the generation protocol and are read through it, whichever protocol is in force now.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import httpx

from sparkspec.errors import BadAnswer, ProviderError, TaskNotFound, UnreadableCreate
from sparkspec.jsontext import load_json
from sparkspec.providers.base import RenderRequest, TaskState, TaskStatus
from sparkspec.providers.spark.answers import json_object
from sparkspec.providers.spark.provider import SparkProvider
from sparkspec.providers.spark.wire import parse_task

QUEUE_PATH = "/model/v1/queue/"
QUEUED = frozenset({"in_queue", "queued", "pending"})
URL_FIELDS = ("status_url", "response_url", "cancel_url")


@dataclass(frozen=True)
class QueueUrls:
    status_url: str
    response_url: str
    cancel_url: str


def bare(model: str, params: dict[str, Any]) -> dict[str, Any]:
    """The queue protocol's create body: the parameters themselves (the model is in the path)."""
    return params


class SparkGateway(SparkProvider):
    """The spark provider: the generation protocol, or with `protocol="queue"` the queue one."""

    def __init__(self, *args: Any, protocol: str = "generation", **options: Any) -> None:
        super().__init__(*args, **options)
        self.protocol = protocol

    async def submit(self, request: RenderRequest) -> TaskStatus:
        if self.protocol != "queue":
            return await super().submit(request)
        what = f"creating the task for {request.scene}"
        model = request.model or self.model
        body = await self._body(request, model, bare)
        response = await self._call("POST", QUEUE_PATH + quote(model, safe=""), what=what, body=body)
        raw = json_object(response)
        request_id = raw.get("request_id") if raw is not None else None
        if raw is not None and not request_id:
            request_id = raw.get("id")
        if raw is None or not isinstance(request_id, (str, int)) or isinstance(request_id, bool) \
                or str(request_id) == "":
            raise UnreadableCreate(f"{what}: the API answered HTTP {response.status_code} without a request id; "
                                   f"it may have queued a task that sparkspec cannot find again")
        request_id = str(request_id)
        given = {name: raw[name] for name in URL_FIELDS if isinstance(raw.get(name), str) and raw[name]}
        locator = json.dumps({"model": model, **given}, sort_keys=True, separators=(",", ":"))
        # Polled next, whatever the answer's status: the outputs come from the response URL.
        return TaskStatus(request_id, TaskState.RUNNING, progress=_progress(raw.get("progress")), locator=locator)

    async def poll(self, task_id: str, locator: str | None = None) -> TaskStatus:
        if locator is None:
            return await super().poll(task_id)  # made through the generation protocol
        urls = self.urls(task_id, locator)
        what = f"reading task {task_id}"
        raw = _about(self._read(await self._call("GET", urls.status_url, what=what), what), task_id, what)
        status = _status(raw)
        if status in ("completed", "succeeded", "success", "done") and raw.get("error") in (None, "", {}):
            answer = self._read(await self._call("GET", urls.response_url, what=what), what)
            raw = {**raw, **_about(answer, task_id, what)}
            status = _status(raw) or status
        task = {"id": task_id, "status": "failed" if status == "completed" and raw.get("error") else status,
                "progress": _progress(raw.get("progress")), "error": raw.get("error"),
                "usage": raw.get("usage"), "metadata": raw.get("metadata"), "seed": raw.get("seed"),
                "created_at": raw.get("created_at"), "last_frame_url": raw.get("last_frame_url"),
                "output": [{"content": raw.get("outputs") or []}] + list(raw.get("output") or [])}
        return dataclasses.replace(parse_task(task, self._scrub), locator=locator)

    async def cancel_queued(self, task_id: str, locator: str | None = None) -> bool:
        """Cancel the request if it still waits in the queue; the generation protocol has no
        cancel, so its tasks are left alone."""
        if locator is None:
            return False
        urls = self.urls(task_id, locator)
        what = f"cancelling queued task {task_id}"
        try:
            raw = self._read(await self._call("GET", urls.status_url, what=what), what)
            if _status(raw) not in QUEUED:
                return False
            await self._call("PUT", urls.cancel_url, what=what)
        except (ProviderError, TaskNotFound):
            return False
        return True

    def urls(self, task_id: str, locator: str) -> QueueUrls:
        """The request's URLs from its locator, each kept only on the gateway's own origin."""
        try:
            given = load_json(locator)
        except ValueError:
            given = {}
        given = given if isinstance(given, dict) else {}
        named = given.get("model")
        model: str = named if isinstance(named, str) and named else self.model
        base = f"{QUEUE_PATH}{quote(model, safe='')}/requests/{quote(task_id, safe='')}"
        derived = {"status_url": base + "/status", "response_url": base + "/response",
                   "cancel_url": base + "/cancel"}
        origin = httpx.URL(self.base_url)
        chosen: dict[str, str] = {}
        for name in URL_FIELDS:
            url = given.get(name)
            chosen[name] = url if isinstance(url, str) and _same_origin(url, origin) else derived[name]
        return QueueUrls(**chosen)

    def _read(self, response: httpx.Response, what: str) -> dict[str, Any]:
        raw = json_object(response)
        if raw is None:
            raise BadAnswer(f"{what}: the API answered HTTP {response.status_code} without a status object")
        return raw


def _about(raw: dict[str, Any], task_id: str, what: str) -> dict[str, Any]:
    """`raw`, unless it names another request (a proxy's or a cache's answer about something
    else): BadAnswer, asked again, never that request's video recorded as this one."""
    named = raw.get("request_id", raw.get("id"))
    if named not in (None, "") and str(named) != task_id:
        raise BadAnswer(f"{what}: the answer is about task {str(named)!r}")
    return raw


def _status(raw: dict[str, Any]) -> str:
    status = str(raw.get("status") or "").lower()
    if not status and raw.get("outputs"):
        return "completed"  # a response object that only lists its outputs (as the CLI reads it)
    return status


def _progress(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) / 100 if value > 1 else float(value)


def _same_origin(url: str, origin: httpx.URL) -> bool:
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL:
        return False
    return (parsed.scheme, parsed.host, parsed.port) == (origin.scheme, origin.host, origin.port)
