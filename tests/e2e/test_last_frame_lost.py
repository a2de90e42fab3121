"""A scene whose video is in place as the lock records it, but whose last frame is gone from
renders/ and from every cache, is not paid for again: its last frame is decoded from the video
once more, a stand-in for the render's own. Scenes chained after it stay keyed by the render's
own last frame (the lock keeps its sha256 beside the stand-in's), so they are not paid for
again either: a clone that lacks the stills (a team that commits only the videos) pays nothing."""

from __future__ import annotations

import base64
import hashlib
import json
import re
import shutil
from pathlib import Path

import pytest

from fakeapi import FakeSparkAPI

from .conftest import Project
from .test_spark_first_contact import SPEC  # noqa: F401 - the spark fixture reads it: a, b chained after a, solo


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def lose(spark: Project, *names: str) -> None:
    """The last frames of `names` deleted from renders/, and the cache cleared."""
    for name in names:
        (spark.root / "renders" / f"{name}.last.png").unlink()
    shutil.rmtree(spark.root / ".sparkspec" / "cache")


def check_truthful(spark: Project) -> None:
    """Every file the lock names is in renders/ with its bytes, and a plan has nothing to do."""
    for record in spark.lock()["scenes"].values():
        for file in (record["video"], record["last_frame"]):
            assert sha((spark.root / file["path"]).read_bytes()) == file["sha256"], file["path"]
    plan = spark.run("plan")
    assert plan.code == 0 and "No changes" in plan.out, plan.out


@pytest.mark.slow  # three applies
def test_a_lost_last_frame_is_decoded_from_the_video_and_nothing_chained_after_it_renders(
        spark: Project, fake_api: FakeSparkAPI) -> None:
    spark.apply()
    assert fake_api.total_creates == 3
    before = spark.lock()["scenes"]
    lose(spark, "a", "solo")

    plan = spark.run("plan")
    assert plan.code == 0, plan.err
    assert "< scene.a (restore)" in plan.out and "decoded again from renders/a.mp4" in plan.out, plan.out
    assert "< scene.solo (restore)" in plan.out
    assert "scene.b" not in plan.out and "0 to render" in plan.out, plan.out  # b is keyed by a's own frame

    result = spark.apply()
    assert fake_api.total_creates == 3  # nothing paid again
    assert sorted(e["scene"] for e in result.events() if e["event"] == "restored") == ["a", "solo"]
    after = spark.lock()["scenes"]
    for name in ("a", "solo"):
        assert after[name]["video"] == before[name]["video"] and after[name]["task_id"] == before[name]["task_id"]
        assert after[name]["last_frame"]["sha256"] != before[name]["last_frame"]["sha256"]  # the stand-in
        assert after[name]["rendered_last_frame_sha256"] == before[name]["last_frame"]["sha256"]
        assert after[name]["last_frame_extracted"] is True
    assert after["b"] == before["b"]
    check_truthful(spark)

    # b rendered again (its prompt changed) starts from the stand-in, the only frame there is,
    # and stays keyed by a's own frame.
    spec = spark.root / "project.spark.yaml"
    spec.write_text(spec.read_text().replace("takes off", "takes off slowly", 1))
    spark.apply()
    assert fake_api.total_creates == 4
    [image] = re.findall(r"data:image/png;base64,([A-Za-z0-9+/=]+)", json.dumps(fake_api.create_bodies[-1]))
    assert sha(base64.b64decode(image)) == after["a"]["last_frame"]["sha256"]
    assert spark.lock()["scenes"]["b"]["inputs"]["first_frame"]["sha256"] == before["a"]["last_frame"]["sha256"]
    check_truthful(spark)


def test_a_clone_with_its_videos_but_not_their_stills_pays_for_nothing(
        spark: Project, fake_api: FakeSparkAPI, tmp_path: Path) -> None:
    """A team that commits renders/*.mp4 and not the *.last.png: a teammate's clone, no cache."""
    spark.apply()
    clone = tmp_path / "clone"
    (clone / "renders").mkdir(parents=True)
    for name in ("project.spark.yaml", "project.spark.lock"):
        shutil.copy(spark.root / name, clone / name)
    for video in (spark.root / "renders").glob("*.mp4"):
        shutil.copy(video, clone / "renders" / video.name)
    teammate = Project(clone)
    teammate.env.update(spark.env, SPARKSPEC_CACHE_DIR=str(tmp_path / "clone-cache"))
    plan = teammate.run("plan")
    assert "0 to render" in plan.out, plan.out
    teammate.apply()
    assert fake_api.total_creates == 3
    assert "No changes" in teammate.run("plan").out


@pytest.mark.slow  # two applies
def test_a_last_frame_that_was_decoded_in_the_first_place_comes_back_the_same_and_nothing_renders(
        spark: Project, fake_api: FakeSparkAPI) -> None:
    fake_api.last_frame = "none"  # the tasks gave no last frame: sparkspec decoded each from its video
    spark.apply()
    assert fake_api.total_creates == 3
    before = spark.lock_bytes()
    lose(spark, "a", "b", "solo")

    result = spark.apply()
    assert fake_api.total_creates == 3  # the same frames again: b's key is the one it had
    assert sorted(e["scene"] for e in result.events() if e["event"] == "restored") == ["a", "b", "solo"]
    assert spark.lock_bytes() == before
    check_truthful(spark)


@pytest.mark.slow  # two applies
def test_a_video_changed_as_well_is_rendered_again(spark: Project, fake_api: FakeSparkAPI) -> None:
    spark.apply()
    lose(spark, "solo")
    video = spark.root / "renders" / "solo.mp4"
    video.write_bytes(video.read_bytes()[:-100])  # cut short: not the video paid for

    plan = spark.run("plan")
    assert "~ scene.solo (update)" in plan.out and "renders/solo.mp4 was altered" in plan.out, plan.out
    assert "decoded again" not in plan.out


@pytest.mark.slow  # two applies
def test_a_lost_last_frame_is_decoded_again_when_the_output_folder_moves_too(
        spark: Project, fake_api: FakeSparkAPI) -> None:
    spark.apply()
    lose(spark, "solo")
    text = (spark.root / "project.spark.yaml").read_text()
    (spark.root / "project.spark.yaml").write_text(text.replace("scenes:", "output_dir: out\nscenes:", 1))
    plan = spark.run("plan")
    assert "< scene.solo (restore)" in plan.out and "decoded again from renders/solo.mp4" in plan.out, plan.out
    spark.apply()
    assert fake_api.total_creates == 3  # nothing paid again: a and b restored, solo decoded
    check_truthful(spark)


@pytest.mark.slow  # two applies
@pytest.mark.parametrize("lost", ["solo.last.png", "solo.take3.last.png"])  # the old pick's, the new pick's
def test_a_lost_last_frame_is_decoded_again_when_a_new_pick_moves_its_take(
        spark: Project, fake_api: FakeSparkAPI, lost: str) -> None:
    spec = spark.root / "project.spark.yaml"
    spec.write_text(spec.read_text().replace('solo: {prompt: "an origami frog jumps"}',
                                             'solo: {prompt: "an origami frog jumps", takes: 3, pick: 2}'))
    spark.apply()
    assert fake_api.total_creates == 5
    (spark.root / "renders" / lost).unlink()
    shutil.rmtree(spark.root / ".sparkspec" / "cache")
    spec.write_text(spec.read_text().replace("pick: 2", "pick: 3"))
    plan = spark.run("plan")
    assert "decoded again from renders/" in plan.out and "0 to render" in plan.out, plan.out
    spark.apply()
    assert fake_api.total_creates == 5  # every take's video was paid for once
    check_truthful(spark)


@pytest.mark.slow  # two applies
def test_a_video_that_cannot_be_decoded_fails_its_scene_in_one_line_and_pays_nothing(
        spark: Project, fake_api: FakeSparkAPI) -> None:
    spark.apply()
    lose(spark, "solo")
    video = spark.root / "renders" / "solo.mp4"
    video.write_bytes(b"\x00not a video\x00" * 100)
    lock = spark.lock()  # the lock records these very bytes: the video is "in place", undecodable
    lock["scenes"]["solo"]["video"].update(sha256=sha(video.read_bytes()), bytes=video.stat().st_size)
    (spark.root / "project.spark.lock").write_text(json.dumps(lock, indent=2, sort_keys=True) + "\n")
    result = spark.run("apply", "--auto-approve")
    assert result.code == 1 and "Traceback" not in result.err + result.out
    [line] = [l for l in (result.out + result.err).splitlines() if "cannot be decoded again from renders/solo.mp4" in l]
    assert "--replace solo" in line
    assert fake_api.total_creates == 3  # nothing paid
