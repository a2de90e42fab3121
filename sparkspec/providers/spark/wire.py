"""The API's wire format: the create call's body, and task objects read as `TaskStatus`.

The create body follows reference section 5 (the gateway); task objects are read
in the gateway's dialect and in upstream's own (section 6). Nothing here talks
to the network: the provider sends what `CreateBody` streams and hands the
decoded answer to `parse_task`.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import uuid
from collections.abc import AsyncIterator, Callable, Mapping
from pathlib import Path
from typing import Any

from sparkspec import apifacts
from sparkspec.errors import BadAnswer, BadFirstFrame
from sparkspec.providers.base import RenderRequest, TaskState, TaskStatus

RUNNING = frozenset({"in_progress", "queued", "in_queue", "processing", "pending", "running", "created"})
COMPLETED = frozenset({"completed", "succeeded", "success", "done"})
TOKEN_FIELDS = ("completion_tokens", "total_tokens", "output_tokens")
VIDEO_SUFFIXES = frozenset({"mp4", "mov", "webm", "m4v", "mkv"})
IMAGE_SUFFIXES = frozenset({"png", "jpg", "jpeg", "webp", "bmp", "gif", "tif", "tiff"})
ENDED = frozenset({"expired", "cancelled", "canceled"})
Envelope = Callable[[str, dict[str, Any]], dict[str, Any]]  # (model, parameters) -> the create body
IMAGE_CHUNK = 3 * 64 * 1024  # a multiple of 3, so chunks base64-encode without padding


class CreateBody:
    """The create call's JSON, streamed: a local first frame is base64-encoded chunk by chunk.

    A 25 MB image would otherwise sit in memory as bytes, as base64 and as JSON at
    once; here at most one chunk of it does, and the length is known up front.
    """

    def __init__(self, prefix: bytes, image: Path | None, image_bytes: int, suffix: bytes,
                 image_sha256: str | None = None) -> None:
        self.prefix, self.image, self.image_bytes, self.suffix = prefix, image, image_bytes, suffix
        self.image_sha256 = image_sha256  # what the key was made of: checked before the body ends
        self.length = len(prefix) + 4 * math.ceil(image_bytes / 3) + len(suffix)

    @staticmethod
    def build(request: RenderRequest, model: str, envelope: Envelope | None = None) -> CreateBody:
        """The body for `request`; `envelope` puts the parameters into the dialect's body
        (default: the generation protocol's `{"model", "input": [{"params"}]}`)."""
        frame = request.first_frame
        path = frame.path if frame is not None and not frame.url else None
        sentinel = f"sparkspec-first-frame-{uuid.uuid4().hex}"
        url: str | None = None
        if frame is not None:
            url = frame.url or sentinel
        text = json.dumps((envelope or generation_envelope)(model, create_params(request, url)),
                          ensure_ascii=False, separators=(",", ":"))
        if path is None:
            return CreateBody(text.encode("utf-8"), None, 0, b"")
        before, _, after = text.partition(json.dumps(sentinel))
        fmt = image_format(path)
        prefix = f'{before}"data:image/{fmt};base64,'.encode()
        return CreateBody(prefix, path, path.stat().st_size, f'"{after}'.encode(), frame.sha256 if frame else None)

    async def stream(self) -> AsyncIterator[bytes]:
        yield self.prefix
        if self.image is not None:
            sent = 0
            digest = hashlib.sha256()
            with self.image.open("rb") as source:
                while chunk := source.read(IMAGE_CHUNK):
                    sent += len(chunk)
                    digest.update(chunk)
                    yield base64.b64encode(chunk)
            # Before the body's end: the API gets a request cut short, which makes no task.
            if sent != self.image_bytes:
                raise BadFirstFrame(f"{self.image} changed while it was being sent; run apply again")
            if self.image_sha256 is not None and digest.hexdigest() != self.image_sha256:
                raise BadFirstFrame(f"the plan is stale: run plan again ({self.image} changed since the plan)")
        yield self.suffix


def generation_envelope(model: str, params: dict[str, Any]) -> dict[str, Any]:
    return {"model": model, "input": [{"params": params}]}


def create_params(request: RenderRequest, first_frame_url: str | None) -> dict[str, Any]:
    """`input[0].params` of the create call (reference sections 2, 5 and 5b)."""
    content: list[dict[str, Any]] = [{"type": "text", "text": request.prompt}]
    if first_frame_url is not None:
        content.append({"type": "image_url", "image_url": {"url": first_frame_url}, "role": "first_frame"})
    params: dict[str, Any] = {"content": content, "return_last_frame": True,
                              "resolution": request.resolution, "ratio": request.ratio}
    if request.frames is not None:
        params["frames"] = request.frames
    else:
        params["duration"] = request.duration if request.duration is not None else apifacts.DEFAULT_DURATION
    params.update(seed=request.seed, camera_fixed=request.camera_fixed, watermark=request.watermark)
    for name in ("service_tier", "execution_expires_after", "callback_url"):
        value = getattr(request, name)
        if value is not None:
            params[name] = value
    return params


def image_format(path: Path) -> str:
    """The lower-case format name the data URL carries, read by Pillow from the header."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            fmt = (image.format or "").lower()
    except (UnidentifiedImageError, OSError) as exc:
        raise BadFirstFrame(f"first frame {path}: not a readable image ({exc})") from None
    fmt = "jpeg" if fmt == "mpo" else fmt
    if fmt not in apifacts.IMAGE_FORMATS:
        raise BadFirstFrame(f"first frame {path}: {fmt or 'unknown'} images are not accepted "
                            f"(allowed: {', '.join(apifacts.IMAGE_FORMATS)})")
    return fmt


def parse_task(raw: Mapping[str, Any], scrub: Callable[[str], str] = str) -> TaskStatus:
    """A task object of either dialect as a `TaskStatus`.

    A status sparkspec does not know is read as still running (the task exists and
    may be paid for) and named in `unknown_status`, so the engine can say so.
    """
    task_id = raw.get("id") or raw.get("task_id")
    if not isinstance(task_id, (str, int)) or isinstance(task_id, bool) or str(task_id) == "":
        raise BadAnswer("the API answered with a task object that has no id")
    task_id = str(task_id)
    status = str(raw.get("status", "")).lower()
    common: dict[str, Any] = {"progress": _number(raw.get("progress")),
                              "created_at": _number(raw.get("created_at"))}
    code, message = _error(raw.get("error"))
    if status in COMPLETED and (code or message):  # finished, but with an error: no render to trust
        status = "failed"
    if status in RUNNING:
        return TaskStatus(task_id, TaskState.RUNNING, **common)
    if status in COMPLETED:
        video, frame = outputs(raw)
        usage = _mapping(raw.get("usage"))
        # Usage below zero is no usage: not reported (the tokens are estimated), and never a refund
        # that lowers the budget's meter or the lock's totals.
        tokens = _first_integer(usage, TOKEN_FIELDS, minimum=0)
        cost = _number(usage.get("cost", raw.get("cost")))
        cost = cost if cost is not None and cost >= 0 else None
        metadata = _mapping(raw.get("metadata"))
        seed = _integer(raw.get("seed"))
        if seed is None:
            seed = _integer(metadata.get("seed"))
        return TaskStatus(task_id, TaskState.COMPLETED, video_url=video, last_frame_url=frame,
                          tokens=tokens, cost=cost, seed=seed, **dict(common, progress=1.0))
    if status == "failed":
        return TaskStatus(task_id, TaskState.FAILED, error_code=code,
                          error_message=scrub(message or "the render failed"), **common)
    if status in ENDED:
        text = f"the task {status}" + (f": {message}" if message else "")
        return TaskStatus(task_id, TaskState.FAILED, error_code=code or status,
                          error_message=scrub(text), **common)
    return TaskStatus(task_id, TaskState.RUNNING, unknown_status=scrub(status)[:80] or "(none)", **common)


def outputs(raw: Mapping[str, Any]) -> tuple[str | None, str | None]:
    """The video's URL and the last frame's, wherever the task object puts them.

    No source shows where the gateway puts the last frame: any item that is an
    image (by its type, content type or URL) counts, and so does any `last_frame_url`.
    """
    video: str | None = None
    frame: str | None = None
    for item in _items(raw):
        url = _string(item.get("url"))
        if url is not None:
            kind = _kind(item, url)
            if kind == "video" and video is None:
                video = url
            elif kind == "image" and frame is None:
                frame = url
        video = video or _string(item.get("video_url"))
        frame = frame or _string(item.get("last_frame_url"))
    return video, frame


def _items(raw: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """Every mapping that may hold an output: the task, `output[]` and their `content[]`,
    `outputs[]` (the queue protocol), `content` (upstream's dialect), `metadata`."""
    found: list[Mapping[str, Any]] = [raw]
    for name in ("output", "outputs", "content", "metadata", "result"):
        value = raw.get(name)
        for output in value if isinstance(value, list) else [value]:
            if isinstance(output, dict):
                found.append(output)
                inner = output.get("content")
                found.extend(item for item in (inner if isinstance(inner, list) else [inner])
                             if isinstance(item, dict))
    return found


def _kind(item: Mapping[str, Any], url: str) -> str | None:
    kind = str(item.get("type") or "").lower()
    if kind in ("video", "image"):
        return kind
    content_type = str(item.get("content_type") or item.get("mime_type") or "").lower()
    if content_type.startswith(("video/", "image/")):
        return content_type.split("/")[0]
    suffix = url.split("?")[0].rsplit(".", 1)[-1].lower()
    if suffix in VIDEO_SUFFIXES:
        return "video"
    if suffix in IMAGE_SUFFIXES:
        return "image"
    return None


def _error(error: Any) -> tuple[str | None, str | None]:
    if isinstance(error, dict):
        code = error.get("code")
        message = error.get("error_message") or error.get("message")
        if isinstance(code, int) and not isinstance(code, bool):
            code = f"{code:09d}"  # the API's codes are nine digits with leading zeros
        return (str(code) if code not in (None, "") else None,
                str(message) if message not in (None, "") else None)
    if isinstance(error, str) and error:
        return None, error
    return None, None


def _number(value: Any) -> float | None:
    """A number, or a string holding one (the CLI's `usage.cost` is "0.35")."""
    if isinstance(value, str):
        try:
            value = float(value.strip())
        except ValueError:
            return None
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return None


def _first_integer(mapping: Mapping[str, Any], names: tuple[str, ...], minimum: int | None = None) -> int | None:
    for name in names:
        value = _integer(mapping.get(name))
        if value is not None and (minimum is None or value >= minimum):
            return value
    return None


def _integer(value: Any) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    number = _number(value)
    if number is not None and number.is_integer():
        return int(number)
    return None


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, dict) else {}


def _string(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None
