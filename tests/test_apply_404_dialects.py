"""A task the API never shows (every query answers 404) is created once per scene, whatever
the dialect: the gateway's queue protocol and upstream's own API (the generation protocol is
test_apply_money's). The scene
fails naming its task, which stays in the journal; nothing is paid for twice."""

from __future__ import annotations

from pathlib import Path

from dialects import ARK, QUEUE, Dialect, every_dialect
from fakeapi import FakeSparkAPI
from fakeapi.store import Fault
from sparkspec.state.journal import Journal
from test_apply_money import apply


@every_dialect(slow=True, only=(QUEUE, ARK))  # the generation protocol: test_apply_money
def test_an_api_that_always_answers_404_sees_one_create_per_scene(tmp_path: Path, fake_api: FakeSparkAPI,
                                                                  dialect: Dialect) -> None:
    fake_api.unknown_tasks = True
    spec = tmp_path / "project.spark.yaml"
    spec.write_text(f"version: 1\nprovider:\n{dialect.spec_provider()}  poll: {{initial: 0.5, max: 4}}\n"
                    "defaults: {resolution: 480p, frames: 29, seed: 11}\n"
                    "scenes:\n  a: {prompt: a heron stands in reeds}\n  b: {prompt: a heron takes flight}\n")
    result, _ = apply(tmp_path, fake_api, environ=dialect.env(fake_api))
    assert sorted(fake_api.creates_by_prompt().values()) == [1, 1]
    assert set(result.failed) == {"a", "b"}
    journal = {e.scene: e.task_id for e in Journal(tmp_path / ".sparkspec/journal").entries()}
    for scene in ("a", "b"):
        assert f"task {journal[scene]} is unknown to the API" in result.failed[scene]
        assert "not submitted again" in result.failed[scene]


@every_dialect(slow=True)
def test_a_create_accepted_without_a_task_to_read_stops_the_submissions(tmp_path: Path, fake_api: FakeSparkAPI,
                                                                        dialect: Dialect) -> None:
    """A 2xx answer to a create with no task id in it: a task may exist and be paid for, and
    every further create could go the same way, so the apply submits nothing more."""
    fake_api.faults.append(Fault("create", "status", times=100, status=200, body={"status": "in_progress"}))
    spec = tmp_path / "project.spark.yaml"
    spec.write_text(f"version: 1\nprovider:\n{dialect.spec_provider()}  poll: {{initial: 0.5, max: 4}}\n"
                    "defaults: {resolution: 480p, frames: 29, seed: 11}\nscenes:\n"
                    + "".join(f"  s{i}: {{prompt: shot {i} of six}}\n" for i in range(6)))
    result, _ = apply(tmp_path, fake_api, environ=dialect.env(fake_api))
    sent = fake_api.requests["create"]
    assert 1 <= sent <= 2 and len(result.failed) == sent  # was 6: one a scene (parallelism 2 here)
    assert all("may have" in message and "sparkspec doctor" in message for message in result.failed.values()), result.failed
    assert len(result.skipped) == 6 - sent
    assert all("answered" in reason and "without a task" in reason for reason in result.skipped.values())
