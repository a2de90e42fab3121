"""merge-lock: a three-way merge of project.spark.lock per scene and per sequence."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cli_runner import Cli
from sparkspec.state.lockfile import FileRecord, Lock, SceneRecord, SequenceRecord, read_lock
from sparkspec.state.lockmerge import merge_locks


def _hex(text: str) -> str:
    """A sha256 of 64 hex digits, as a lock records one, standing for `text`."""
    return hashlib.sha256(text.encode()).hexdigest()


def scene(key: str, name: str = "s") -> SceneRecord:
    return SceneRecord(key=key, provider="local", model="m", task_id=f"t-{key}", seed=1, tokens=10,
                       video=FileRecord(f"renders/{name}.mp4", _hex(f"v{key}"), 100),
                       last_frame=FileRecord(f"renders/{name}.last.png", _hex(f"p{key}"), 10))


def sequence(*members: str) -> SequenceRecord:
    return SequenceRecord(tuple(members), FileRecord("renders/film.mp4", _hex("f" + "".join(members)), 5))


def lock(**scenes: SceneRecord) -> Lock:
    return Lock(dict(scenes))


def test_each_side_changes_its_own_scene() -> None:
    base = lock(intro=scene("1"), outro=scene("2"))
    ours = lock(intro=scene("1b"), outro=scene("2"))
    theirs = lock(intro=scene("1"), outro=scene("2b"), extra=scene("3"))
    merged = merge_locks(base, ours, theirs)
    assert merged.lock.scenes == {"intro": scene("1b"), "outro": scene("2b"), "extra": scene("3")}
    assert merged.kept_ours == ()


def test_a_removal_on_one_side_is_kept_when_the_other_left_the_entry_alone() -> None:
    base = lock(intro=scene("1"), outro=scene("2"))
    merged = merge_locks(base, lock(intro=scene("1")), lock(intro=scene("1"), outro=scene("2")))
    assert set(merged.lock.scenes) == {"intro"}
    merged = merge_locks(base, lock(intro=scene("1"), outro=scene("2")), lock(outro=scene("2")))
    assert set(merged.lock.scenes) == {"outro"}


def test_both_sides_changing_one_entry_keeps_ours_and_says_so() -> None:
    base = lock(intro=scene("1"))
    merged = merge_locks(base, lock(intro=scene("ours")), lock(intro=scene("theirs")))
    assert merged.lock.scenes == {"intro": scene("ours")}
    assert merged.kept_ours == ("scene.intro",)
    # A removal is a change too: ours wins both ways.
    assert merge_locks(base, lock(), lock(intro=scene("theirs"))).lock.scenes == {}
    assert merge_locks(base, lock(intro=scene("ours")), lock()).lock.scenes == {"intro": scene("ours")}
    # Both added the same name with different renders (no base): ours.
    assert merge_locks(Lock(), lock(new=scene("a")), lock(new=scene("b"))).lock.scenes == {"new": scene("a")}


def test_the_same_change_on_both_sides_is_no_conflict() -> None:
    merged = merge_locks(lock(intro=scene("1")), lock(intro=scene("2")), lock(intro=scene("2")))
    assert merged.lock.scenes == {"intro": scene("2")} and merged.kept_ours == ()


def test_sequences_merge_like_scenes() -> None:
    base = Lock({}, {"film": sequence("a", "b"), "teaser": sequence("a")})
    ours = Lock({}, {"film": sequence("a", "b2"), "teaser": sequence("a")})
    theirs = Lock({}, {"film": sequence("a", "b3"), "teaser": sequence("a2")})
    merged = merge_locks(base, ours, theirs)
    assert merged.lock.sequences == {"film": sequence("a", "b2"), "teaser": sequence("a2")}
    assert merged.kept_ours == ("sequence.film",)


keys = st.sampled_from(["1", "2", "3"])
sides = st.dictionaries(st.sampled_from(["a", "b", "c"]), keys.map(scene), max_size=3).map(lambda d: Lock(d))


@settings(max_examples=60, deadline=None)
@given(sides, sides, sides)
def test_merge_laws(base: Lock, ours: Lock, theirs: Lock) -> None:
    merged = merge_locks(base, ours, theirs).lock
    assert merge_locks(base, ours, ours).lock == ours  # both sides agree
    assert merge_locks(base, base, theirs).lock == theirs  # only theirs changed
    assert merge_locks(base, ours, base).lock == ours  # only ours changed
    for name, record in merged.scenes.items():  # nothing invented
        assert record in (ours.scenes.get(name), theirs.scenes.get(name))
    assert merge_locks(base, ours, theirs).lock == merged  # deterministic


def test_the_command_writes_the_merge_into_ours(cli: Cli, tmp_path: Path) -> None:
    (tmp_path / "base").write_text("")  # git passes an empty BASE when both branches added the lock
    (tmp_path / "ours").write_text(lock(intro=scene("1")).to_text())
    (tmp_path / "theirs").write_text(lock(outro=scene("2")).to_text())
    done = cli("merge-lock", "base", "ours", "theirs", cwd=tmp_path)
    assert done.returncode == 0 and done.stderr == ""
    merged, text = read_lock(tmp_path / "ours")
    assert set(merged.scenes) == {"intro", "outro"}
    assert text == merged.to_text() and "<<<<<<<" not in text
    assert (tmp_path / "theirs").read_text() == lock(outro=scene("2")).to_text()


def test_the_command_names_a_kept_conflict(cli: Cli, tmp_path: Path) -> None:
    for name, record in (("base", scene("1")), ("ours", scene("2")), ("theirs", scene("3"))):
        (tmp_path / name).write_text(lock(intro=record).to_text())
    done = cli("merge-lock", "base", "ours", "theirs", cwd=tmp_path)
    assert done.returncode == 0
    assert "scene.intro changed on both sides; kept ours" in done.stderr
    assert json.loads((tmp_path / "ours").read_text())["scenes"]["intro"]["key"] == "2"


@pytest.mark.parametrize("bad", ['{"version": 1, "scenes": {', '{"version": 2}', "<<<<<<< HEAD\n", "[]"])
def test_a_file_that_is_not_a_lock_is_exit_1_and_leaves_ours_alone(cli: Cli, tmp_path: Path, bad: str) -> None:
    (tmp_path / "base").write_text(Lock().to_text())
    ours = lock(intro=scene("1")).to_text()
    (tmp_path / "ours").write_text(ours)
    (tmp_path / "theirs").write_text(bad)
    done = cli("merge-lock", "base", "ours", "theirs", cwd=tmp_path)
    assert done.returncode == 1
    line, = done.stderr.strip().splitlines()
    assert line.startswith("error: theirs") and "lock" in line
    assert (tmp_path / "ours").read_text() == ours


def test_a_missing_file_is_exit_1(cli: Cli, tmp_path: Path) -> None:
    (tmp_path / "ours").write_text(Lock().to_text())
    done = cli("merge-lock", "nothere", "ours", "ours", cwd=tmp_path)
    assert done.returncode == 1 and "nothere: no such file" in done.stderr
