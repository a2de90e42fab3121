"""Messages and pages that tell the truth, as a user meets them through the CLI: the review
page's links work with a nested `output_dir` and what it links is written again when missing;
`--replace` of a sequence stitches it again; a failed render is printed once in plain mode."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from cli_runner import Cli, run_here
from fakeapi import FakeSparkAPI

SPEC = """\
version: 1
provider: {type: local}
output_dir: out/deep/renders
defaults: {resolution: 480p, ratio: "1:1", frames: 29, seed: 3}
scenes:
  a: {prompt: "a red kite"}
  b: {prompt: "a blue kite", first_frame: {scene: a}}
sequences:
  film: {scenes: [a, b]}
"""


def links(page: Path) -> set[str]:
    """What the page points at in its folder (not its own anchors, not data URLs)."""
    found = re.findall(r'(?:href|src|poster)="([^"]*)"', page.read_text(encoding="utf-8"))
    return {link for link in found if not link.startswith(("#", "data:", "http:", "https:"))}


@pytest.fixture(scope="module")
def applied_once(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("applied")
    (root / "project.spark.yaml").write_text(SPEC)
    with pytest.MonkeyPatch.context() as patch:
        result = run_here("apply", "--auto-approve", cwd=root, monkeypatch=patch)
    assert result.code == 0, result.err
    return root


@pytest.fixture
def applied(applied_once: Path, tmp_path: Path) -> Path:
    """A copy of the project applied once (its cache folder, under HOME, is per test: what
    the copy's lock names is in its renders, and the tests need no more)."""
    shutil.copytree(applied_once, tmp_path / "project", symlinks=True)
    return tmp_path / "project"


def test_the_pages_links_work_with_a_nested_output_dir(applied: Path) -> None:
    page = applied / "out/deep/renders/index.html"
    linked = links(page)
    assert {"a.mp4", "b.mp4", "film.mp4", "a.last.png", "contact.png"} <= linked
    for link in linked:
        assert (page.parent / link).is_file(), link


@pytest.mark.parametrize("output_dir", [".", "./", "out/"])
def test_the_pages_links_work_with_any_output_dir(cli: Cli, applied: Path, output_dir: str) -> None:
    spec = applied / "project.spark.yaml"
    spec.write_text(spec.read_text().replace("output_dir: out/deep/renders", f"output_dir: {output_dir!r}"))
    result = cli("apply", "--auto-approve", cwd=applied)  # restored from the cache
    assert result.code == 0 and "0 rendered" in result.out, result.err
    # the contact sheet found every clip: the one line is the moved output_dir's
    assert [line for line in result.err.splitlines() if "stay there" not in line] == []
    assert "out/deep/renders/ stay there" in result.err
    page = applied / output_dir / "index.html"
    assert {"a.mp4", "b.mp4", "film.mp4", "contact.png"} <= links(page)
    for link in links(page):
        assert (page.parent / link).is_file(), link


@pytest.mark.parametrize("missing", [["index.html"], ["contact.png"], ["index.html", "contact.png"]])
def test_the_page_and_the_sheet_it_links_are_written_again_when_missing(cli: Cli, applied: Path,
                                                                        missing: list[str]) -> None:
    output = applied / "out/deep/renders"
    for name in missing:
        (output / name).unlink()
    again = cli("apply", "--auto-approve", cwd=applied)
    assert again.code == 0, again.err
    assert "No changes" in again.out
    for link in links(output / "index.html"):
        assert (output / link).is_file(), link


def test_replace_of_a_sequence_stitches_it_again_and_renders_nothing(cli: Cli, applied: Path) -> None:
    film = applied / "out/deep/renders/film.mp4"
    film.write_bytes(film.read_bytes())  # same bytes: only --replace makes it stitch
    before = film.stat().st_mtime_ns
    plan = cli("plan", "--replace", "film", cwd=applied)
    assert plan.code == 0 and "> sequence.film (stitch)" in plan.out and "forced by --replace" in plan.out
    result = cli("apply", "--auto-approve", "--json", "--replace", "film", cwd=applied)
    assert result.code == 0, result.err
    events = result.events()
    assert [e["sequence"] for e in events if e["event"] == "stitched"] == ["film"]
    assert not [e for e in events if e["event"] in ("submitted", "completed")]
    assert film.stat().st_mtime_ns != before
    for unknown in ("nope", "sequence.nope"):
        refused = cli("apply", "--auto-approve", "--replace", unknown, cwd=applied)
        assert refused.code == 1
        assert refused.err.startswith(f"error: --replace {unknown}: no scene or sequence")  # as typed


def test_a_failed_render_is_printed_once_in_plain_mode(cli: Cli, tmp_path: Path, fake_api: FakeSparkAPI,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SPARK_API_KEY", fake_api.api_key)
    monkeypatch.setenv("SPARK_BASE_URL", fake_api.base_url)
    (tmp_path / "project.spark.yaml").write_text(
        "version: 1\nprovider: {type: spark, poll: {initial: 0.05, max: 0.1}}\n"
        "defaults: {resolution: 480p, ratio: '1:1', frames: 29, seed: 3}\n"
        "scenes:\n  a: {prompt: a red kite}\n  b: {prompt: a blue kite}\n")
    fake_api.outcome("failed", code="OutputVideoSensitiveContentDetected", message="flagged by moderation",
                     match=lambda params: "red" in str(params))
    result = cli("apply", "--auto-approve", cwd=tmp_path)
    assert result.code == 1
    everything = result.out + result.err
    assert everything.count("flagged by moderation") == 1, everything
    assert [line for line in result.err.splitlines() if "flagged" in line][0].startswith("error: a: ")
    assert "1 rendered" in result.out and "1 failed" in result.out


def test_ids_may_be_given_as_the_plan_prints_them(cli: Cli, applied: Path) -> None:
    # terraform takes the address its plan prints (-replace=aws_instance.web): so does sparkspec
    by_id = cli("plan", "--replace", "film", "--replace", "a", cwd=applied)
    by_address = cli("plan", "--replace", "sequence.film", "--replace", "scene.a", cwd=applied)
    assert by_address.code == 0, by_address.err
    assert by_address.out == by_id.out and "-/+ scene.a (replace)" in by_id.out
    targeted = cli("plan", "--target", "scene.a", "--replace", "scene.a", cwd=applied)
    assert "scene.a (replace)" in targeted.out and "scene.b" not in targeted.out
