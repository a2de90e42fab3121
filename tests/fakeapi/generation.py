"""The gateway's generation protocol (reference section 5): `POST /model/v1/generation` with
`{"model", "input": [{"params"}]}`, `GET /model/v1/generation/task/{id}`."""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING, Any

from fakeapi.store import MODEL, Task

if TYPE_CHECKING:
    from fakeapi.server import Handler
    from fakeapi.store import FakeSparkAPI


def gateway_error(status: int, message: str, code: str | None = None) -> Any:
    """The gateway's error body: `{"message"}` (a refused key also says `"error": "unauthorized"`)."""
    return {"message": message, "error": code} if code == "unauthorized" else {"message": message}


def create(handler: Handler) -> None:
    try:
        body = json.loads(handler.raw)
        params, model = body["input"][0]["params"], body["model"]
    except (ValueError, KeyError, IndexError, TypeError):
        body, params, model = None, None, None
    handler.create("generation", body, params, model, MODEL, lambda task: task_object(handler.api, task),
                   gateway_error)


def query(handler: Handler, task_id: str) -> None:
    task = handler.task("query", task_id, gateway_error)
    if task is not None:
        handler.json(200, task_object(handler.api, task))


def task_object(api: FakeSparkAPI, task: Task) -> dict[str, Any]:
    """The task object, in the gateway's shape or (generation_shape "upstream") in upstream's."""
    upstream = api.generation_shape == "upstream"
    obj: dict[str, Any] = {"id": task.id, "model": task.model}
    if api.report_created_at:
        obj["created_at"] = int(task.created_at)
    phase = task.phase()
    names = api.status_names
    if phase in ("queued", "running"):
        running = ("queued" if phase == "queued" else "running") if upstream else "in_progress"
        obj.update(status=names.get(running, running), progress=task.progress() if phase == "running" else 0.0)
        return obj
    if phase == "cancelled":
        obj.update(status="cancelled")
        return obj
    if task.outcome is not None:
        out = task.outcome
        if out.kind == "completed_with_error":
            obj.update(status="completed", error={"code": out.code or "003021098",
                                                  "message": out.message or "generation failed"})
        elif out.kind == "failed":
            error: Any = out.message or "generation failed"
            if not out.error_as_string:
                error = {"code": out.code or "003021098", "error_message": out.message or "generation failed"}
            obj.update(status="failed", error=error)
        else:
            obj.update(status=out.kind)
        return obj
    result = api.result(task)
    seed = task.params.get("seed")
    if upstream:
        content = {"video_url": result["video_url"]}
        if result["last_frame_url"]:
            content["last_frame_url"] = result["last_frame_url"]
        obj.update(status=names.get("succeeded", "succeeded"), content=content, usage=result["usage"], seed=seed)
        return obj
    items: list[dict[str, Any]] = [
        {"type": "video", "url": result["video_url"], "jobId": f"job-{task.id}",
         "duration": result["frames"] / 24, "format": "mp4",
         "resolution": f"{result['width']}x{result['height']}", "ratio": task.params.get("ratio"), "fps": 24}]
    if api.last_frame == "image":
        items.append({"type": "image", "url": result["last_frame_url"], "format": "png"})
    elif api.last_frame == "untyped":
        items.append({"url": result["last_frame_url"], "content_type": "image/png"})
    elif api.last_frame == "last_frame_url":
        obj["last_frame_url"] = result["last_frame_url"]
    obj.update(status=names.get("completed", "completed"), progress=1, usage=result["usage"],
               metadata={"seed": seed} if api.report_seed else {}, output=[{"content": items}])
    return obj


ROUTES = [
    ("POST", re.compile(r"/model/v1/generation"), create),
    ("GET", re.compile(r"/model/v1/generation/task/([^/]+)"), query),
]
