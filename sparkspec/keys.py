"""Scene keys (DESIGN section 3): sha256 of canonical JSON of what decides the pixels."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from sparkspec.config.model import Project, Scene

KEY_VERSION = 1


@dataclass(frozen=True)
class SceneKey:
    hex: str
    seed: int  # the seed sent: given, or derived from the other inputs
    seed_derived: bool
    inputs: dict[str, Any]  # exactly what was hashed


def canonical_json(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def first_frame_input(sha256: str | None = None, url: str | None = None) -> dict[str, str] | None:
    if sha256 is not None:
        return {"sha256": sha256}
    if url is not None:
        return {"url": url}
    return None


def take_seed(seed: int, take: int) -> int:
    """The seed of take `take` of a scene whose seed (take 1's) is `seed`: the first 31 bits
    of sha256 of canonical JSON `[seed, take]`, so every take is as reproducible as take 1."""
    if take == 1:
        return seed
    return int.from_bytes(hashlib.sha256(canonical_json([seed, take])).digest()[:4], "big") >> 1


def scene_key(project: Project, scene: Scene, first_frame: dict[str, str] | None,
              take: int = 1) -> SceneKey:
    """The key of `scene` (of its take `take`), given its first frame's identity (see
    `first_frame_input`). Take 1 is the scene's key as if it had no other takes."""
    inputs: dict[str, Any] = {
        "key_version": KEY_VERSION,
        "salt": project.salt,
        "provider": project.provider.type,
        "model": project.provider.model,
        "prompt": scene.prompt,
        "resolution": scene.resolution,
        "ratio": scene.ratio,
        "camera_fixed": scene.camera_fixed,
        "watermark": scene.watermark,
        "first_frame": first_frame,
    }
    if scene.frames is not None:
        inputs["frames"] = scene.frames
    else:
        inputs["duration"] = scene.duration
    derived = scene.seed is None
    if derived:
        # First 31 bits of the other inputs' digest: reproducible, and in the API's range.
        seed = int.from_bytes(hashlib.sha256(canonical_json(inputs)).digest()[:4], "big") >> 1
    else:
        assert scene.seed is not None
        seed = scene.seed
    if take > 1 and seed == -1:
        inputs["take"] = take  # every take asks for a random seed; the keys still differ
    elif take > 1:
        seed = take_seed(seed, take)
    inputs["seed"] = seed
    return SceneKey(hashlib.sha256(canonical_json(inputs)).hexdigest(), seed, derived, inputs)
