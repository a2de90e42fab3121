"""The gateway's queue protocol (reference section 7): `POST /model/v1/queue/{model}` with the
bare parameters, answered with `request_id` and the URLs of its status, response and cancel;
statuses IN_QUEUE, IN_PROGRESS, COMPLETED (with `error` when it failed); results in `outputs[]`.

The URL layout is the operator's CLI's (`.../requests/{request_id}/status`, `/response`), with
`/cancel` for PUT; clients are to use the URLs of the answer, not build them.
"""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING, Any

from fakeapi.generation import gateway_error
from fakeapi.store import MODEL, Task

if TYPE_CHECKING:
    from fakeapi.server import Handler
    from fakeapi.store import FakeSparkAPI

STATUS = {"queued": "IN_QUEUE", "running": "IN_PROGRESS"}


def urls(api: FakeSparkAPI, task: Task) -> dict[str, str]:
    base = f"{api.base_url}/model/v1/queue/{task.model}/requests/{task.id}"
    return {"status_url": base + "/status", "response_url": base + "/response", "cancel_url": base + "/cancel"}


def create(handler: Handler, model: str) -> None:
    try:
        params = json.loads(handler.raw)
    except ValueError:
        params = None
    api = handler.api

    def answer(task: Task) -> dict[str, Any]:
        return {"request_id": task.id, **status_object(api, task), **urls(api, task)}

    handler.create("queue", params, params, model, MODEL, answer, gateway_error)


def status(handler: Handler, model: str, request_id: str) -> None:
    task = handler.task("query", request_id, gateway_error)
    if task is not None:
        handler.json(200, status_object(handler.api, task))


def response(handler: Handler, model: str, request_id: str) -> None:
    task = handler.task("result", request_id, gateway_error)
    if task is None:
        return
    obj = status_object(handler.api, task)
    if obj["status"] != "COMPLETED":
        handler.json(400, {"message": "the request is still in progress", **obj})
        return
    if "error" not in obj:
        api = handler.api
        result = api.result(task)
        size = {"width": result["width"], "height": result["height"]}
        outputs = [{"type": "video", "url": result["video_url"], "content_type": "video/mp4", **size}]
        frame = result["last_frame_url"]
        if api.last_frame == "image":
            outputs.append({"type": "image", "url": frame, "content_type": "image/png", **size})
        elif api.last_frame == "untyped":
            outputs.append({"url": frame, "content_type": "image/png"})
        elif api.last_frame == "last_frame_url":
            obj["last_frame_url"] = frame
        obj.update(outputs=outputs, usage=result["usage"],
                   metadata={"seed": task.params.get("seed")} if api.report_seed else {})
    handler.json(200, obj)


def cancel(handler: Handler, model: str, request_id: str) -> None:
    task = handler.task("cancel", request_id, gateway_error)
    if task is None:
        return
    if handler.api.cancel(task):
        handler.json(200, {"request_id": task.id, "status": "CANCELLATION_REQUESTED"})
    else:
        handler.json(400, {"message": f"request {task.id} is no longer in the queue and cannot be cancelled"})


def status_object(api: FakeSparkAPI, task: Task) -> dict[str, Any]:
    phase = task.phase()
    obj: dict[str, Any] = {"request_id": task.id}
    if phase in STATUS:
        obj.update(status=STATUS[phase], progress=task.progress() if phase == "running" else 0.0)
        if phase == "queued":
            obj["queue_position"] = sum(1 for t in list(api.tasks.values())
                                        if t.phase() == "queued" and t.created_mono < task.created_mono)
        return obj
    obj["status"] = "COMPLETED"
    out = task.outcome
    if phase == "cancelled":
        obj["error"] = {"code": "cancelled", "message": "the request was cancelled"}
    elif out is not None and out.kind in ("failed", "completed_with_error"):
        message = out.message or "generation failed"
        obj["error"] = message if out.error_as_string else {"code": out.code or "003021098", "message": message}
    elif out is not None:
        obj["error"] = {"code": out.kind, "message": f"the request {out.kind}"}
    return obj


_REQUEST = r"/model/v1/queue/([^/]+)/requests/([^/]+)"
ROUTES = [
    ("POST", re.compile(r"/model/v1/queue/([^/]+)"), create),
    ("GET", re.compile(_REQUEST + "/status"), status),
    ("GET", re.compile(_REQUEST + "/response"), response),
    ("PUT", re.compile(_REQUEST + "/cancel"), cancel),
]
