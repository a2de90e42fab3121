"""Re-rolls an `apply --replace` paid for and had not put in place when it stopped.

A `--replace` render is downloaded into the cache (its index names it as the key's render)
before its files are copied into renders/ and the lock names it. An apply stopped between the
two (Ctrl-C or a kill during a long copy) leaves a lock that names the old render, or, with its
record withheld, none; the next `--replace` of the scene would pay for yet another render. This
file (`.sparkspec/rerolls.json`, beside the journal folder, whose .json files are entries) names
each such re-roll by key and task id from when it is obtained until the lock records it, so the
next `--replace` installs it at no new cost.
"""

from __future__ import annotations

import json
from pathlib import Path

from sparkspec.fsutil import atomic_write_text
from sparkspec.jsontext import load_json

NAME = "rerolls.json"


def read(state_dir: Path) -> dict[str, str]:
    """Key -> task id of the re-rolls not yet recorded in the lock (none when missing or damaged)."""
    try:
        found = load_json((state_dir / NAME).read_bytes())
    except (OSError, ValueError):
        return {}
    return {str(k): str(v) for k, v in found.items()} if isinstance(found, dict) else {}


def _write(state_dir: Path, rerolls: dict[str, str]) -> None:
    """Best effort: a folder that cannot be written costs only the saving this file makes (the
    next --replace pays for a render again), never the apply."""
    path = state_dir / NAME
    try:
        if not rerolls:
            path.unlink(missing_ok=True)
            return
        state_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, json.dumps(rerolls, sort_keys=True, indent=1) + "\n")
    except OSError:
        pass


def note(state_dir: Path, key: str, task_id: str) -> None:
    _write(state_dir, {**read(state_dir), key: task_id})


def settle(state_dir: Path, recorded: dict[str, set[str]]) -> None:
    """Forget the re-rolls the lock now records (`recorded`: key -> the task ids it names)."""
    rerolls = read(state_dir)
    kept = {k: t for k, t in rerolls.items() if t not in recorded.get(k, set())}
    if kept != rerolls:
        _write(state_dir, kept)
