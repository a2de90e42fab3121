"""The lock's text: the documented JSON (sorted keys, 2-space indent), built from per-record
fragments so that writing it after every scene stays linear."""

from __future__ import annotations

import json
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from sparkspec.state.lockfile import FileRecord, Lock, SceneRecord, SequenceRecord, read_lock, write_lock

names = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=1, max_size=12)
digests = st.text("0123456789abcdef", min_size=4, max_size=8)
files = st.builds(FileRecord, path=names, sha256=digests, bytes=st.integers(0, 10**9))
scalars = st.one_of(st.none(), st.booleans(), st.integers(-10**6, 10**6), names)
scenes = st.builds(
    SceneRecord, key=digests, provider=st.sampled_from(["local", "spark"]), model=names, task_id=names,
    seed=st.integers(0, 2**32 - 1), tokens=st.integers(0, 10**7), video=files, last_frame=files,
    inputs=st.dictionaries(names, st.one_of(scalars, st.dictionaries(names, scalars, max_size=3)), max_size=4),
    seed_derived=st.booleans(), cost=st.one_of(st.none(), st.floats(0, 1000, allow_nan=False)))
sequences = st.builds(SequenceRecord, members=st.tuples(digests, digests), video=files)
locks = st.builds(Lock, scenes=st.dictionaries(names, scenes, max_size=5),
                  sequences=st.dictionaries(names, sequences, max_size=3))


@settings(max_examples=200, deadline=None)
@given(locks)
def test_lock_text_is_the_documented_json(lock: Lock) -> None:
    payload = {"version": 1, "scenes": {k: v.to_json() for k, v in lock.scenes.items()},
               "sequences": {k: v.to_json() for k, v in lock.sequences.items()}}
    assert lock.to_text() == json.dumps(payload, sort_keys=True, indent=2, ensure_ascii=False) + "\n"


@settings(max_examples=50, deadline=None)
@given(locks)
def test_lock_round_trips_byte_for_byte(lock: Lock) -> None:
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "project.spark.lock"
        write_lock(path, lock)
        again, text = read_lock(path)
        assert text == lock.to_text() == again.to_text()
