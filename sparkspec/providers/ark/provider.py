"""ModelArk's content generation tasks over httpx (reference section 8).

`POST /contents/generations/tasks` takes the model and the parameters at the top level
and answers `{"id"}`; `GET .../tasks/{id}` is upstream's task object (queued, running,
succeeded, failed, cancelled, expired; `content.video_url` and `content.last_frame_url`;
`usage.completion_tokens`; the `seed` used), read by the same parser as the gateway's.
Errors are `{"error": {"code", "message"}}` with text codes, read by their code (`errors`:
AuthenticationError, AccountOverdueError, AccessDenied, ... as the gateway's 401, 402, 403),
and the API's words are shown. Clients, retries and downloads are the spark provider's.

Unlike the gateway, ModelArk lists tasks. So a create whose answer was lost (a read
timeout, a connection dropped after the body went out) is looked up before the scene is
failed: the tasks of the model created in the window of the lost call, with the
parameters it sent. Exactly one such task, not already known to this apply, is adopted
(journalled and collected like any other); none or several fail the scene as before, with
no second create. Only a render whose seed sparkspec derived from its inputs is looked up:
the list shows no prompt, and a seed the spec gives may be another render's too. A task
still queued can be cancelled (`DELETE`), which Ctrl-C does.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import quote, urlencode

import httpx

from sparkspec.errors import BadAnswer, CreateUnconfirmed, ProviderError, TaskNotFound, UnreadableCreate
from sparkspec.providers.ark.errors import ark_refusal
from sparkspec.providers.base import RenderRequest, TaskState, TaskStatus
from sparkspec.providers.spark.answers import json_object
from sparkspec.providers.spark.provider import SparkProvider
from sparkspec.providers.spark.wire import create_params, parse_task

TASKS_PATH = "/contents/generations/tasks"
LOOKUP_SLACK = 30.0  # seconds either side of the lost call: whole-second created_at, clocks apart
LOOKUP_PAGE = 100  # newest first; more tasks than this in the window is "several" anyway
# Fields of a listed task compared with what the lost create sent (where the task reports them).
FITTING = ("seed", "resolution", "ratio", "duration", "frames", "camera_fixed", "watermark")


def top_level(model: str, params: dict[str, Any]) -> dict[str, Any]:
    """ModelArk's create body: the model and the parameters side by side."""
    return {"model": model, **params}


class ArkProvider(SparkProvider):
    type = "ark"

    def __init__(self, *args: Any, wall_clock: Callable[[], float] = time.time, **options: Any) -> None:
        super().__init__(*args, **options)
        self.wall_clock = wall_clock
        self._known: set[str] = set()  # tasks this provider made or read: never adopted for another scene
        # The parameters of creates sent and not answered yet: a task one of them made is listed
        # before its answer names it, so a lost create that fits one of them cannot be told apart.
        self._in_flight: dict[int, dict[str, Any]] = {}

    async def submit(self, request: RenderRequest) -> TaskStatus:
        what = f"creating the task for {request.scene}"
        model = request.model or self.model
        body = await self._body(request, model, top_level)
        started = self.wall_clock()
        ticket = object()
        self._in_flight[id(ticket)] = create_params(request, None)
        try:
            response = await self._call("POST", TASKS_PATH, what=what, body=body)
            task_id = _id(response)
            if task_id is None:
                raise UnreadableCreate(f"{what}: the API answered HTTP {response.status_code} without a task id; "
                                       f"it may have created a task")
        except CreateUnconfirmed as exc:
            del self._in_flight[id(ticket)]
            found, note = await self.lookup(request, model, started, self.wall_clock())
            if found is None:
                if isinstance(exc, UnreadableCreate):  # its message ends with what apply does next
                    raise UnreadableCreate(f"{exc.detail} ({note})") from None
                raise CreateUnconfirmed(f"{exc} ({note})") from None
            return found
        finally:
            self._in_flight.pop(id(ticket), None)
        self._known.add(task_id)
        return TaskStatus(task_id, TaskState.RUNNING)

    async def poll(self, task_id: str, locator: str | None = None) -> TaskStatus:
        self._known.add(task_id)
        what = f"reading task {task_id}"
        status = self._task(await self._call("GET", f"{TASKS_PATH}/{quote(task_id, safe='')}", what=what), what)
        if status.task_id != task_id:  # a proxy's or a cache's answer about something else: never its video
            raise BadAnswer(f"{what}: the answer is about task {status.task_id!r}")
        return status

    async def cancel_queued(self, task_id: str, locator: str | None = None) -> bool:
        """Cancel the task if it still waits in the queue (a running one cannot be cancelled)."""
        what = f"cancelling queued task {task_id}"
        path = f"{TASKS_PATH}/{quote(task_id, safe='')}"
        try:
            status = json_object(await self._call("GET", path, what=what))
            if status is None or str(status.get("status", "")).lower() != "queued":
                return False
            await self._call("DELETE", path, what=what)
        except (ProviderError, TaskNotFound):
            return False
        return True

    def _refusal(self, response: httpx.Response, what: str) -> ProviderError | None:
        return ark_refusal(response, what, self._scrub, self.key_env)

    async def lookup(self, request: RenderRequest, model: str, started: float,
                     ended: float) -> tuple[TaskStatus | None, str]:
        """The task a lost create made, if the list shows exactly one that fits; else why not.
        A listed task shows its parameters, not its prompt or image: only a seed derived from
        the render's own inputs tells it apart from a task of the same account (a teammate's,
        another scene's) made with the spec's seed at the same moment."""
        if not request.seed_derived:
            return None, ("not looked up: its seed is the spec's own, which other renders may share, and a listed "
                          "task does not show its prompt, so none could be told to be this one")
        query = urlencode({"page_num": 1, "page_size": LOOKUP_PAGE, "filter.model": model})
        try:
            listing = json_object(await self._call("GET", f"{TASKS_PATH}?{query}",
                                               what=f"looking up the task of {request.scene}"))
        except ProviderError as exc:
            return None, f"looking the task up failed too: {exc}"
        items = listing.get("items") if listing is not None else None
        if not isinstance(items, list):
            return None, "the task list could not be read, so no task was adopted"
        low, high = math.floor(started - LOOKUP_SLACK), math.ceil(ended + LOOKUP_SLACK)
        sent = create_params(request, None)
        if any(_same_fit(sent, other) for other in self._in_flight.values()):
            return None, ("looked up: another create of these parameters in this apply is still waiting for its "
                          "answer, and its task would look the same, so none was adopted")
        matches = [item for item in items if isinstance(item, dict) and isinstance(item.get("id"), str)
                   and item["id"] not in self._known and _created_within(item, low, high) and _fits(item, sent)]
        if len(matches) != 1:
            return None, (f"looked up: {len(matches)} tasks of {model} with these parameters were created then, "
                          f"so none was adopted" if matches else
                          f"looked up: no task of {model} with these parameters was created then")
        found = parse_task(matches[0], self._scrub)
        self._known.add(found.task_id)
        return found, "adopted"


def _id(response: httpx.Response) -> str | None:
    raw = json_object(response)
    task_id = raw.get("id") if raw is not None else None
    return task_id if isinstance(task_id, str) and task_id else None


def _created_within(item: dict[str, Any], low: float, high: float) -> bool:
    created = item.get("created_at")
    return isinstance(created, (int, float)) and not isinstance(created, bool) and low <= created <= high


def _same_fit(one: dict[str, Any], other: dict[str, Any]) -> bool:
    """Two creates whose tasks the list could not tell apart (a random seed fits any)."""
    return _fits(other, one) or _fits(one, other)  # _fits compares the FITTING fields only


def _fits(item: dict[str, Any], sent: dict[str, Any]) -> bool:
    """Every parameter the listed task reports equals what was sent (a random seed, -1, is
    whatever the task reports)."""
    for name in FITTING:
        if name not in item or item[name] is None or name not in sent:
            continue
        if name == "seed" and sent[name] == -1:
            continue
        if item[name] != sent[name]:
            return False
    return True
