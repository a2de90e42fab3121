"""Why a scene renders again: its lock record's inputs against its new key, one reason per
changed input (the prompt as a word diff)."""

from __future__ import annotations

from typing import Any

from sparkspec.keys import SceneKey
from sparkspec.plan.prompt_diff import word_diff
from sparkspec.state.lockfile import SceneRecord

_PARAMETERS = ("resolution", "ratio", "duration", "frames", "camera_fixed", "watermark", "model", "salt",
               "key_version")


def why_changed(record: SceneRecord, key: SceneKey, skip: tuple[str, ...] = ()) -> list[str]:
    """Why `record` (from the lock) differs from `key`, parameter by parameter."""
    old, new = record.inputs, key.inputs
    if not old:
        return ["the lock has no inputs recorded for it"]
    reasons = []
    if old.get("provider") != new.get("provider"):
        reasons.append(f"provider: {old.get('provider')} -> {new.get('provider')}")
    if old.get("prompt") != new.get("prompt"):
        reasons.append(f"prompt: {word_diff(str(old.get('prompt', '')), str(new.get('prompt', '')))}")
    for name in _PARAMETERS:
        if old.get(name) != new.get(name):
            reasons.append(f"{name}: {show_value(old.get(name))} -> {show_value(new.get(name))}")
    if "seed" not in skip and not (record.seed_derived and key.seed_derived) and old.get("seed") != new.get("seed"):
        reasons.append(f"seed: {show_value(old.get('seed'))} -> {show_value(new.get('seed'))}")
    if "first_frame" not in skip and old.get("first_frame") != new.get("first_frame"):
        reasons.append("first frame changed")
    return reasons or ["key changed"]


def show_value(value: Any) -> str:
    if value is None:
        return "(unset)"
    if value == "":
        return '""'
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)
