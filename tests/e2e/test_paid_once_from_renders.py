"""A render already paid for is not paid for again when this machine's cache lacks it but the
lock records it in place for another scene of the same key (a clone, a cache cleared, a damaged
blob): the plan says so and apply adopts those bytes (checked against the lock) into the cache."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest

from cli_runner import Cli
from fakeapi import FakeSparkAPI

SPEC = """\
version: 1
provider: {type: spark, poll: {initial: 0.05, max: 0.1}}
defaults: {resolution: 480p, ratio: "1:1", frames: 29, seed: 3}
scenes:
  a: {prompt: "a red kite", description: the opening}
  b: {prompt: "a red kite", description: "the same shot, for the end"}
"""


@pytest.fixture
def applied(cli: Cli, tmp_path: Path, fake_api: FakeSparkAPI, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("SPARK_API_KEY", fake_api.api_key)
    monkeypatch.setenv("SPARK_BASE_URL", fake_api.base_url)
    (tmp_path / "project.spark.yaml").write_text(SPEC)
    result = cli("apply", "--auto-approve", cwd=tmp_path)
    assert result.code == 0, result.err
    assert fake_api.total_creates == 1  # b is the same render as a
    return tmp_path


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def blobs(root: Path) -> list[Path]:
    return [p for p in (root / ".sparkspec/cache/blobs").rglob("*") if p.is_file()]


def apply_pays_nothing(cli: Cli, root: Path, api: FakeSparkAPI, planned: str) -> None:
    plan = cli("plan", cwd=root)
    assert plan.code == 0 and planned in plan.out and "0 to render" in plan.out, plan.out
    result = cli("apply", "--auto-approve", cwd=root)
    assert result.code == 0, result.err
    assert "0 rendered" in result.out and api.total_creates == 1
    assert sha(root / "renders/a.mp4") == sha(root / "renders/b.mp4")
    assert "No changes" in cli("plan", cwd=root).out


def test_a_rename_on_a_machine_without_the_cache_reuses_the_render_in_place(cli: Cli, applied: Path,
                                                                            fake_api: FakeSparkAPI) -> None:
    shutil.rmtree(applied / ".sparkspec")
    spec = applied / "project.spark.yaml"
    spec.write_text(spec.read_text().replace("  b: {", "  c: {"))
    plan = cli("plan", cwd=applied)
    assert "= scene.c (reuse)" in plan.out and "already rendered: renders/a.mp4" in plan.out
    result = cli("apply", "--auto-approve", cwd=applied)
    assert result.code == 0, result.err
    assert "0 rendered" in result.out and fake_api.total_creates == 1
    assert sha(applied / "renders/c.mp4") == sha(applied / "renders/a.mp4")
    assert not (applied / "renders/b.mp4").exists()
    assert blobs(applied)  # adopted: the next machine state needs no renders/ to reuse it


def test_a_missing_output_is_restored_from_the_same_render_in_place(cli: Cli, applied: Path,
                                                                   fake_api: FakeSparkAPI) -> None:
    shutil.rmtree(applied / ".sparkspec")
    (applied / "renders/b.mp4").unlink()
    apply_pays_nothing(cli, applied, fake_api, "renders/b.mp4 is missing; the same render is renders/a.mp4")


def test_a_damaged_blob_is_replaced_by_the_same_render_in_place(cli: Cli, applied: Path,
                                                               fake_api: FakeSparkAPI) -> None:
    video = sha(applied / "renders/a.mp4")
    blob = applied / ".sparkspec/cache/blobs" / video[:2] / video
    data = bytearray(blob.read_bytes())
    data[len(data) // 2] ^= 0xFF
    blob.write_bytes(bytes(data))
    (applied / "renders/b.mp4").unlink()
    apply_pays_nothing(cli, applied, fake_api, "the same render is renders/a.mp4")
    assert sha(blob) == video


def test_an_altered_copy_is_never_adopted(cli: Cli, applied: Path, fake_api: FakeSparkAPI) -> None:
    shutil.rmtree(applied / ".sparkspec")
    (applied / "renders/b.mp4").unlink()
    with (applied / "renders/a.mp4").open("ab") as video:
        video.write(b"edited")
    plan = cli("plan", cwd=applied)
    assert "the same render is" not in plan.out and "1 to render" in plan.out, plan.out
    assert "renders/a.mp4 was altered and not in the cache" in plan.out


def test_a_cache_whose_index_was_moved_aside_still_restores_from_its_files(cli: Cli, applied: Path,
                                                                          fake_api: FakeSparkAPI) -> None:
    # What the message of a damaged cache index advises: move the index aside, the files stay.
    # The lock names those files by sha256, so a missing output is restored, never paid again.
    index = applied / ".sparkspec" / "cache" / "index"
    index.rename(index.with_name("index.damaged"))
    (applied / "renders" / "a.mp4").unlink()
    (applied / "renders" / "b.mp4").unlink()
    plan = cli("plan", cwd=applied)
    assert "< scene.a (restore)" in plan.out and "its files are in the cache" in plan.out, plan.out
    assert "0 to render" in plan.out
    done = cli("apply", "--auto-approve", cwd=applied)
    assert done.code == 0 and "a: restored" in done.out, done.out + done.err
    assert fake_api.total_creates == 1
    assert "No changes" in cli("plan", cwd=applied).out


TWO = """\
version: 1
provider: {type: spark, poll: {initial: 0.05, max: 0.1}}
defaults: {resolution: 480p, ratio: "1:1", frames: 29, seed: 3}
scenes:
  x: {prompt: "a paper crane", takes: 2}
  y: {prompt: "an origami frog"}
"""


@pytest.mark.slow  # over a second and a half: the default run stays under 90 s
@pytest.mark.parametrize("edit", ["revert an edit", "lower then raise takes", "drop then re-add a scene"])
def test_what_apply_overwrites_or_deletes_on_a_machine_without_the_cache_is_kept(
        edit: str, cli: Cli, tmp_path: Path, fake_api: FakeSparkAPI, monkeypatch: pytest.MonkeyPatch) -> None:
    """A clone has renders/ and the lock but no cache: the renders an apply replaced or deleted
    were gone for good, so undoing the change paid for them again."""
    monkeypatch.setenv("SPARK_API_KEY", fake_api.api_key)
    monkeypatch.setenv("SPARK_BASE_URL", fake_api.base_url)
    spec = tmp_path / "project.spark.yaml"
    spec.write_text(TWO)
    assert cli("apply", "--auto-approve", cwd=tmp_path).code == 0
    assert fake_api.total_creates == 3
    original = {p.name: sha(p) for p in (tmp_path / "renders").glob("*.mp4")}
    shutil.rmtree(tmp_path / ".sparkspec")
    changed = {"revert an edit": TWO.replace("an origami frog", "an origami toad"),
               "lower then raise takes": TWO.replace("takes: 2", "takes: 1"),
               "drop then re-add a scene": TWO.replace('  y: {prompt: "an origami frog"}\n', "")}[edit]
    spec.write_text(changed)
    result = cli("apply", "--auto-approve", cwd=tmp_path)
    assert result.code == 0, result.err
    paid = fake_api.total_creates
    spec.write_text(TWO)
    plan = cli("plan", cwd=tmp_path)
    assert plan.code == 0 and "0 to render" in plan.out, plan.out
    result = cli("apply", "--auto-approve", cwd=tmp_path)
    assert result.code == 0 and "0 rendered" in result.out, result.out + result.err
    assert fake_api.total_creates == paid
    assert {p.name: sha(p) for p in (tmp_path / "renders").glob("*.mp4")} == original
    assert "No changes" in cli("plan", cwd=tmp_path).out


def test_a_restore_brings_back_the_lock_s_render_not_another_render_of_its_key(
        cli: Cli, tmp_path: Path, fake_api: FakeSparkAPI, monkeypatch: pytest.MonkeyPatch) -> None:
    """Twin scenes of one key, one re-rolled by --replace (a real API's re-roll is other bytes):
    the cache's index then names the re-roll, yet a restore of the other twin must bring back
    its own recorded render (its files are in the cache), or the scene chained after it would
    see another first frame and be paid for again."""
    fake_api.unique = True
    monkeypatch.setenv("SPARK_API_KEY", fake_api.api_key)
    monkeypatch.setenv("SPARK_BASE_URL", fake_api.base_url)
    (tmp_path / "project.spark.yaml").write_text(
        SPEC + '  after: {first_frame: {scene: b}, prompt: "the kite dives"}\n')
    assert cli("apply", "--auto-approve", cwd=tmp_path).code == 0
    assert cli("apply", "--auto-approve", "--replace", "a", "--target", "a", cwd=tmp_path).code == 0
    assert fake_api.total_creates == 3
    recorded = sha(tmp_path / "renders/b.mp4")
    assert sha(tmp_path / "renders/a.mp4") != recorded  # the re-roll
    (tmp_path / "renders/b.mp4").unlink()
    plan = cli("plan", cwd=tmp_path)
    assert "< scene.b (restore)" in plan.out and "0 to render" in plan.out, plan.out
    assert cli("apply", "--auto-approve", cwd=tmp_path).code == 0
    assert fake_api.total_creates == 3
    assert sha(tmp_path / "renders/b.mp4") == recorded
    assert "No changes" in cli("plan", cwd=tmp_path).out
