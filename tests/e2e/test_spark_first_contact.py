"""Issue 8 through the CLI: answers that differ from our guess never lose a paid render."""

from __future__ import annotations

import pytest
from PIL import Image, ImageChops

from fakeapi import FakeSparkAPI
from sparkspec.media.frames import last_frame

from .conftest import Project

SPEC = """\
version: 1
provider:
  type: spark
  parallelism: 1
  poll: {initial: 0.05, max: 0.2}
defaults: {resolution: 480p, frames: 29, seed: 9}
scenes:
  a: {prompt: "a paper crane unfolds"}
  b: {first_frame: {scene: a}, prompt: "the crane takes off"}
  solo: {prompt: "an origami frog jumps"}
"""


@pytest.mark.slow  # about 3 s
def test_a_task_without_a_last_frame_is_delivered_with_one_extracted(spark: Project, fake_api: FakeSparkAPI) -> None:
    fake_api.last_frame = "none"
    result = spark.apply()
    assert result.rendered() == ["a", "b", "solo"]
    assert not [e for e in result.events() if e["event"] == "failed"]
    warnings = [e for e in result.events() if e["event"] == "warning"]
    assert len(warnings) == 3 and all("extracted it from the video" in w["message"] for w in warnings)
    for name, record in spark.lock()["scenes"].items():
        assert record["last_frame_extracted"] is True, name
        png = Image.open(spark.root / record["last_frame"]["path"])
        assert png.format == "PNG"
        decoded = last_frame(spark.root / record["video"]["path"])
        assert png.size == decoded.size and ImageChops.difference(png.convert("RGB"), decoded).getbbox() is None
    # b was created from a's extracted frame
    assert sorted(fake_api.creates_by_key.values()) == [1, 1, 1]


@pytest.mark.slow  # a whole apply or two; the default run keeps its siblings
def test_a_task_with_a_last_frame_records_none_extracted(spark: Project, fake_api: FakeSparkAPI) -> None:
    fake_api.last_frame = "last_frame_url"
    result = spark.apply()
    assert result.rendered() == ["a", "b", "solo"]
    assert not [e for e in result.events() if e["event"] == "warning"]
    assert all("last_frame_extracted" not in r for r in spark.lock()["scenes"].values())


@pytest.mark.slow  # over a second: the default run stays under 90 s
def test_out_of_credits_stops_new_submissions_in_the_apis_words(spark: Project, fake_api: FakeSparkAPI) -> None:
    fake_api.inject("create", "status", status=402,
                    body={"status": {"code": 402, "message": "Insufficient credits", "error_code": 40201}}, times=10)
    result = spark.run("apply", "--auto-approve")
    assert result.code == 1
    assert "Insufficient credits" in result.out + result.err and "Top up" in result.out + result.err
    assert fake_api.requests["create"] == 1 and fake_api.total_creates == 0
    assert "skipped" in result.out


@pytest.mark.slow  # polls until the status settles
def test_an_unknown_status_is_polled_with_one_warning(spark: Project, fake_api: FakeSparkAPI) -> None:
    fake_api.status_names = {"in_progress": "rendering", "completed": "done"}
    fake_api.latency = 0.3
    result = spark.apply()
    assert result.rendered() == ["a", "b", "solo"]
    warnings = [e for e in result.events() if e["event"] == "warning"]
    assert warnings and all("'rendering'" in w["message"] for w in warnings)
    assert len(warnings) == len({w["task_id"] for w in warnings})  # once per task


@pytest.mark.slow  # a whole apply through the fake
def test_a_completed_task_with_an_error_fails_the_scene(spark: Project, fake_api: FakeSparkAPI) -> None:
    fake_api.outcome("completed_with_error", message="output blocked by moderation")
    result = spark.run("apply", "--auto-approve")
    assert result.code == 1 and "output blocked by moderation" in result.out + result.err


ARK_SPEC = """\
version: 1
provider:
  type: ark
  parallelism: 2
  poll: {initial: 0.05, max: 0.2}
defaults: {resolution: 480p, frames: 29, seed: 9}
scenes:
  a: {prompt: "a paper crane unfolds"}
  b: {prompt: "an origami frog jumps"}
  c: {prompt: "a paper boat drifts"}
  d: {prompt: "a folded star spins"}
"""


@pytest.mark.parametrize("status,code,words", [
    (403, "AccountOverdueError", "The request failed because your account has an overdue balance"),
    pytest.param(400, "OperationDenied.ServiceOverdue", "service overdue", marks=pytest.mark.slow),
])
@pytest.mark.slow  # a whole apply or two; the default run keeps its siblings
def test_ark_account_overdue_stops_new_submissions_and_collects_the_running_task(
        project: Project, fake_api: FakeSparkAPI, status: int, code: str, words: str) -> None:
    project.write(ARK_SPEC)
    project.env.update(ARK_API_KEY=fake_api.api_key, ARK_BASE_URL=fake_api.ark_base_url)
    fake_api.latency = 0.6  # the one task created is still rendering when the other create is refused
    fake_api.inject("create", "status", status=status, times=10, skip=1,
                    body={"error": {"code": code, "message": words, "param": "", "type": "Forbidden"}})
    result = project.run("apply", "--auto-approve", "--json")
    assert result.code == 1, result.err
    # two creates in flight at once (parallelism 2): one refused, one made; no third is tried
    assert fake_api.requests["create"] == 2 and fake_api.total_creates == 1
    made, = fake_api.tasks.values()
    collected = fake_api.prompt_of_key[made.key]
    scene = {"a paper crane unfolds": "a", "an origami frog jumps": "b", "a paper boat drifts": "c",
             "a folded star spins": "d"}[collected]
    assert result.rendered() == [scene] and sorted(project.lock()["scenes"]) == [scene]
    said = result.out + result.err
    assert words in said and code in said and "Top up" in said and "Traceback" not in said
