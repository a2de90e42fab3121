"""The lock's text: the documented JSON (sorted keys, 2-space indent), built from per-record
fragments so that writing it after every scene stays linear."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sparkspec.state.lockfile import (
    FileRecord,
    Lock,
    SceneRecord,
    SequenceRecord,
    read_lock,
    scene_entry,
    write_lock,
)

names = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=1, max_size=12)
digests = st.text("0123456789abcdef", min_size=64, max_size=64)
files = st.builds(FileRecord, path=names, sha256=digests, bytes=st.integers(0, 10**9))
scalars = st.one_of(st.none(), st.booleans(), st.integers(-10**6, 10**6), names)
scenes = st.builds(
    SceneRecord, key=digests, provider=st.sampled_from(["local", "spark"]), model=names, task_id=names,
    seed=st.integers(0, 2**32 - 1), tokens=st.integers(0, 10**7), video=files, last_frame=files,
    inputs=st.dictionaries(names, st.one_of(scalars, st.dictionaries(names, scalars, max_size=3)), max_size=4),
    seed_derived=st.booleans(), cost=st.one_of(st.none(), st.floats(0, 1000, allow_nan=False)))



@st.composite
def entries(draw: st.DrawFn) -> SceneRecord:
    """A scene's lock entry: a lone render, or several takes (each its own key) and a pick."""
    numbers = draw(st.sets(st.integers(1, 8), min_size=1, max_size=4))
    takes = {n: replace(draw(scenes), key=f"{draw(digests)}t{n}") for n in numbers}
    return scene_entry(takes, draw(st.integers(1, 8)))


sequences = st.builds(SequenceRecord, members=st.tuples(digests, digests), video=files)
locks = st.builds(Lock, scenes=st.dictionaries(names, st.one_of(scenes, entries()), max_size=5),
                  sequences=st.dictionaries(names, sequences, max_size=3))


@settings(deadline=None)  # max_examples: the profile's (tests/conftest.py)
@given(locks)
def test_lock_text_is_the_documented_json(lock: Lock) -> None:
    payload = {"version": 1, "scenes": {k: v.to_json() for k, v in lock.scenes.items()},
               "sequences": {k: v.to_json() for k, v in lock.sequences.items()}}
    assert lock.to_text() == json.dumps(payload, sort_keys=True, indent=2, ensure_ascii=False) + "\n"


@settings(deadline=None)  # max_examples: the profile's (tests/conftest.py)
@given(locks)
def test_lock_round_trips_byte_for_byte(lock: Lock) -> None:
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "project.spark.lock"
        write_lock(path, lock)
        again, text = read_lock(path)
        assert text == lock.to_text() == again.to_text()


@settings(deadline=None)  # max_examples: the profile's (tests/conftest.py)
@given(entries())
def test_a_scene_with_takes_records_every_take_and_the_pick_on_top(entry: SceneRecord) -> None:
    raw = entry.to_json()
    takes = entry.take_records()
    if "takes" not in raw:  # a lone take 1, picked: version 1's shape exactly
        assert list(takes) == [1] and entry.pick == 1
        assert set(raw) == {"key", "provider", "model", "task_id", "seed", "tokens", "video",
                            "last_frame", "inputs", "seed_derived"} | ({"cost"} if entry.cost is not None else set())
        return
    assert [t["take"] for t in raw["takes"]] == sorted(takes)
    top = takes.get(raw["pick"]) or takes[min(takes)]
    # The top-level fields are the picked take's (the lowest take's while the pick is not recorded).
    assert {k: v for k, v in raw.items() if k not in ("takes", "pick")} == top.to_json()
    for listed in raw["takes"]:
        assert {k: v for k, v in listed.items() if k != "take"} == takes[listed["take"]].to_json()
    again = SceneRecord.from_json(json.loads(json.dumps(raw)))
    assert again == entry and again.take == top.take


def test_scenes_or_sequences_that_are_not_objects_make_a_malformed_lock(tmp_path: Path) -> None:
    import pytest

    from sparkspec.errors import StatePathError

    path = tmp_path / "project.spark.lock"
    for bad in ({"scenes": []}, {"scenes": None}, {"sequences": ""}, {"scenes": {}, "sequences": 0}):
        path.write_text(json.dumps({"version": 1, **bad}))
        with pytest.raises(StatePathError, match="the lock is malformed"):
            read_lock(path)
    path.write_text(json.dumps({"version": 1}))  # absent: none
    assert read_lock(path)[0] == Lock({}, {})


@pytest.mark.parametrize(("entry", "said"), [({}, "scenes.a lacks its field 'key'"),
                                             (5, "scenes.a is int, not an object"),
                                             ({"key": "k", "provider": "p", "model": "m", "seed": 1, "video": 5},
                                              "scenes.a has a field of the wrong type"),
                                             ({"key": "k", "takes": 5}, "scenes.a has a field of the wrong type")])
def test_a_malformed_entry_is_named_in_words(tmp_path: Path, entry: object, said: str) -> None:
    from sparkspec.errors import StatePathError

    path = tmp_path / "project.spark.lock"
    path.write_text(json.dumps({"version": 1, "scenes": {"a": entry}}))
    with pytest.raises(StatePathError) as raised:
        read_lock(path)
    assert f"the lock is malformed ({said}); restore it from git" in str(raised.value)


def test_a_lock_an_editor_saved_with_a_byte_order_mark_is_read(tmp_path: Path) -> None:
    """Notepad and some Windows tools put one at the start: it was "not valid JSON"."""
    path = tmp_path / "project.spark.lock"
    lock = Lock()
    write_lock(path, lock)
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())
    assert read_lock(path)[0] == lock


@pytest.mark.parametrize("field, value", [("bytes", "398428"), ("bytes", -5), ("bytes", 1e308), ("bytes", True),
                                          ("sha256", "abc"), ("sha256", 7), ("path", 3)])
def test_a_file_record_of_the_wrong_kind_makes_a_malformed_lock(tmp_path: Path, field: str, value: object) -> None:
    """A size "398428" or 1e308 was taken as given: plan said No changes, and the lock no
    longer described renders/."""
    from sparkspec.errors import StatePathError

    sha = "ab" * 32
    record = {"path": "renders/a.mp4", "sha256": sha, "bytes": 10}
    entry = {"key": sha, "provider": "local", "model": "m", "task_id": "t", "seed": 1, "tokens": 1, "inputs": {},
             "video": dict(record, **{field: value}), "last_frame": dict(record, path="renders/a.last.png")}
    path = tmp_path / "project.spark.lock"
    path.write_text(json.dumps({"version": 1, "scenes": {"a": entry}}))
    with pytest.raises(StatePathError, match="scenes.a has a field of the wrong type"):
        read_lock(path)
    path.write_text(json.dumps({"version": 1, "scenes": {"a": dict(entry, video=record)}}))
    assert read_lock(path)[0].scenes["a"].video.bytes == 10
