"""A clone's apply pulls the renders its lock records without rewriting the lock (each file
appears whole with the bytes the record names: tests/state/test_unsynced.py). When the remote
turns out to hold another render of the key than the lock's (its blobs never went up: another
machine won the write-once entry), the record leaves the lock before the file changes, and
comes back naming what was installed."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

import sparkspec.apply.outputs as outputs
import sparkspec.state.lockfile as lockfile
from cli_runner import Cli
from teammates import two_machines


def watch(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str]]:
    """Each lock write (its text) and each file linked into renders/ (its name), in order."""
    events: list[tuple[str, str]] = []
    real_write, real_link = lockfile.write_lock, outputs._link_into_place

    def write_lock(path: Path, lock: lockfile.Lock) -> None:
        real_write(path, lock)
        events.append(("lock", path.read_text()))

    def link(blob: Path, dest: Path) -> None:
        events.append(("link", dest.name))
        real_link(blob, dest)

    monkeypatch.setattr(lockfile, "write_lock", write_lock)
    monkeypatch.setattr("sparkspec.apply.lockwriter.write_lock", write_lock)
    monkeypatch.setattr(outputs, "_link_into_place", link)
    return events


@pytest.mark.slow  # over 0.7 s: the default run stays under 90 s on a fresh clone
def test_a_pull_that_finds_another_render_of_the_key_withholds_the_record_first(
        tmp_path: Path, cli: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    winner, clone = two_machines(tmp_path, cli)  # the winner's apply pushed: the remote's entries
    # The loser rendered the same keys with other bytes (its video a byte longer: an mp4 `free`
    # box) and committed its lock; its push found the entries taken, so its blobs never went up.
    lock = json.loads((winner / "project.spark.lock").read_text())
    video = (winner / "renders" / "one.mp4").read_bytes() + (8).to_bytes(4, "big") + b"free"
    record = lock["scenes"]["one"]["video"]
    record.update(sha256=hashlib.sha256(video).hexdigest(), bytes=len(video))
    (clone / "project.spark.lock").write_text(json.dumps(lock, indent=2) + "\n")

    # Listed, the key's entry is not read: the lock's record stands in for it until its blobs
    # turn out to be missing (with 2 keys in 2 shards a GET of each entry would read it).
    monkeypatch.setattr("sparkspec.remote.index.WHOLE_FROM", 1)
    events = watch(monkeypatch)
    result = cli("apply", "--auto-approve", cwd=clone)
    assert result.code == 0, result.err + result.out
    assert (clone / "renders" / "one.mp4").read_bytes() == (winner / "renders" / "one.mp4").read_bytes()
    installed = next(i for i, e in enumerate(events) if e == ("link", "one.mp4"))
    before = [json.loads(text) for kind, text in events[:installed] if kind == "lock"]
    # The file stopped naming the loser's video before the winner's replaced it on disk ...
    assert before and "one" not in before[-1]["scenes"] and "two" in before[-1]["scenes"]
    # ... and ends naming what is there, as the winner's lock does.
    assert (clone / "project.spark.lock").read_text() == (winner / "project.spark.lock").read_text()
