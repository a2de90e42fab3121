"""Upstream's own API (ModelArk, reference section 8) under `/api/v3`: tasks are created with the
model and the parameters at the top level, read, listed and cancelled; errors are
`{"error": {"code", "message", "param", "type"}}` with text codes."""

from __future__ import annotations

import json
import re
import time
from typing import TYPE_CHECKING, Any

from fakeapi.store import Task

if TYPE_CHECKING:
    from fakeapi.server import Handler
    from fakeapi.store import FakeSparkAPI

CODES = {400: "InvalidParameter", 401: "AuthenticationError", 403: "AccessDenied", 404: "ResourceNotFound",
         429: "RateLimitExceeded.EndpointRPMExceeded", 500: "InternalServiceError", 503: "ServiceUnavailable"}
STATUS = {"queued": "queued", "running": "running", "completed": "succeeded", "failed": "failed",
          "expired": "expired", "cancelled": "cancelled", "completed_with_error": "failed"}
TASKS = "/api/v3/contents/generations/tasks"


def ark_error(status: int, message: str, code: str | None = None) -> Any:
    if code is None or code in ("unauthorized",) or not code[:1].isupper():
        code = CODES.get(status, "InternalServiceError")
    return {"error": {"code": code, "message": message, "param": "", "type": "BadRequest" if status < 500
                      else "ServerError"}}


def create(handler: Handler) -> None:
    try:
        body = json.loads(handler.raw)
        params = {k: v for k, v in body.items() if k != "model"}
        model = body.get("model")
    except (ValueError, AttributeError):
        body, params, model = None, None, None
    handler.create("ark", body, params, model, handler.api.ark_model, lambda task: {"id": task.id}, ark_error)


def query(handler: Handler, task_id: str) -> None:
    task = handler.task("query", task_id, ark_error)
    if task is not None:
        handler.json(200, task_object(handler.api, task))


def delete(handler: Handler, task_id: str) -> None:
    """Cancel a queued task, or delete the record of a finished one; a running one cannot be."""
    task = handler.task("cancel", task_id, ark_error)
    if task is None:
        return
    api = handler.api
    if api.cancel(task):
        handler.json(200, {})
    elif task.phase() == "running":
        handler.json(400, ark_error(400, f"task {task_id} is running and cannot be cancelled", "InvalidParameter"))
    else:
        api.forget(task.id)
        handler.json(200, {})


def listing(handler: Handler) -> None:
    api = handler.api
    handler.count("list", None)
    if not handler.authorized(ark_error) or handler.apply_fault(api.take_fault("list"), ark_error):
        return
    query = handler.query
    page = max(1, int(query.get("page_num", ["1"])[0]))
    size = max(1, min(500, int(query.get("page_size", ["10"])[0])))
    status = query.get("filter.status", [None])[0]
    model = query.get("filter.model", [None])[0]
    ids = set(query.get("filter.task_ids", []))
    with api.lock:
        tasks = [t for t in api.tasks.values() if t.dialect == "ark" and t.id not in api.forgotten]
    items = [task_object(api, t) for t in sorted(tasks, key=lambda t: t.created_mono, reverse=True)
             if (model is None or t.model == model) and (not ids or t.id in ids)]
    items = [item for item in items if status is None or item["status"] == status]
    handler.json(200, {"total": len(items), "items": items[(page - 1) * size: page * size]})


def task_object(api: FakeSparkAPI, task: Task) -> dict[str, Any]:
    params = task.params
    phase = task.phase()
    obj: dict[str, Any] = {
        "id": task.id, "model": task.model, "status": api.status_names.get(STATUS[phase], STATUS[phase]), "error": None,
        "seed": params.get("seed"), "resolution": params.get("resolution"), "ratio": params.get("ratio"),
        "service_tier": params.get("service_tier", "default"), "framespersecond": 24,
        "created_at": int(task.created_at), "updated_at": int(time.time()),
        "execution_expires_after": params.get("execution_expires_after", 172800)}
    if "frames" in params:
        obj["frames"] = params["frames"]
    else:
        obj["duration"] = params.get("duration", 5)
    out = task.outcome
    if phase == "completed":
        result = api.result(task)
        content = {"video_url": result["video_url"]}
        if result["last_frame_url"]:
            content["last_frame_url"] = result["last_frame_url"]
        obj.update(content=content, usage=result["usage"])
    elif phase in ("failed", "completed_with_error") and out is not None:
        obj["error"] = {"code": out.code or "InternalServiceError", "message": out.message or "generation failed"}
    return obj


ROUTES = [
    ("POST", re.compile(TASKS), create),
    ("GET", re.compile(TASKS), listing),
    ("GET", re.compile(TASKS + "/([^/]+)"), query),
    ("DELETE", re.compile(TASKS + "/([^/]+)"), delete),
]
