"""The sequence videos sparkspec stitched, by path: its own, even when no lock names them.

An apply that re-stitches a sequence withholds its record from the lock before the first output
changes; killed before the stitch, it leaves `renders/<sequence>.mp4` recorded nowhere, and the
next apply would take sparkspec's own earlier film for a user's file (moved aside to
`.sparkspec/displaced/`, with a false warning). Sequences are not cached, so this small file
vouches for them: the last few digests stitched at each path.
"""

from __future__ import annotations

import json
from pathlib import Path

from sparkspec.fsutil import atomic_write_text
from sparkspec.jsontext import load_json

NAME = "stitched.json"
KEPT = 4  # digests a path: the films of the last few stitches


def stitched(state_dir: Path, rel: str) -> list[str]:
    """The digests sparkspec stitched at `rel` lately (none when the file is missing or damaged)."""
    try:
        found = load_json((state_dir / NAME).read_bytes()).get(rel, [])
    except (OSError, ValueError, AttributeError):
        return []
    return [d for d in found if isinstance(d, str)] if isinstance(found, list) else []


def remember(state_dir: Path, rel: str, digest: str) -> None:
    """`digest` was stitched at `rel` now. Best effort: a state folder that cannot be written
    costs only the warning this file spares."""
    path = state_dir / NAME
    try:
        memo = load_json(path.read_bytes())
        memo = memo if isinstance(memo, dict) else {}
    except (OSError, ValueError):
        memo = {}
    memo[rel] = [digest, *[d for d in stitched(state_dir, rel) if d != digest]][:KEPT]
    try:
        atomic_write_text(path, json.dumps(memo, sort_keys=True, indent=1) + "\n")
    except OSError:
        pass
