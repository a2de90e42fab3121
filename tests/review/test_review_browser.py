"""The review page in a real browser: headless Chromium from the OS packages, driven through
the DevTools protocol, on the espresso-spot example rendered offline and then changed once
(so scenes have a before / after)."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from browser import Chromium, find_chromium
from cli_runner import Run, run_cli

from sparkspec.media.probe import probe_video

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def sparkspec(work: Path, *args: str) -> Run:
    return run_cli("-C", str(work), *args, cwd=work, timeout=600)


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> Path:
    work = tmp_path_factory.mktemp("review") / "espresso-spot"
    shutil.copytree(ROOT / "examples/espresso-spot", work,
                    ignore=shutil.ignore_patterns("renders", ".sparkspec", "*.lock"))
    assert sparkspec(work, "apply", "--auto-approve").returncode == 0
    spec = work / "project.spark.yaml"
    # The intro changes (so every scene has a before / after) and crema gets three takes, the second picked.
    spec.write_text(spec.read_text().replace("slow dolly in", "slow dolly out")
                    .replace("    camera_fixed: true\n", "    camera_fixed: true\n    takes: 3\n    pick: 2\n"))
    second = sparkspec(work, "apply", "--auto-approve", "--json")
    assert second.returncode == 0, second.stderr
    events = [json.loads(line) for line in second.stdout.splitlines()]
    completed = [e["scene"] for e in events if e["event"] == "completed"]
    assert completed[:2] == ["intro", "pour"]
    assert sorted(completed[2:]) == ["crema", "crema.take2", "crema.take3"]
    return work


@pytest.fixture(scope="module")
def browser() -> Iterator[Chromium]:
    binary = find_chromium()
    if binary is None:
        pytest.skip("no Chromium on PATH: install the Debian packages chromium and chromium-driver "
                    "(.ci/run does)")
    chromium = Chromium(binary, width=1280, height=700)
    try:
        yield chromium
    finally:
        chromium.close()


def test_every_video_plays_at_its_probed_duration_offline(rendered: Path, browser: Chromium) -> None:
    renders = rendered / "renders"
    browser.open((renders / "index.html").as_uri())
    sources = browser.evaluate("[...document.querySelectorAll('video')].map(v => v.dataset.src)")
    befores = [s for s in sources if s.startswith("before/")]
    assert sources[0] == "spot.mp4" and befores[0].startswith("before/intro.")
    # The film, three scenes, crema's two other takes, the renders the scenes replaced.
    assert len(sources) == 6 + len(befores)
    assert [s for s in sources if s.startswith("crema")] == ["crema.mp4", "crema.take1.mp4", "crema.take3.mp4"]
    # Lazy: what is far below the fold has not been asked for yet.
    assert browser.evaluate("document.querySelectorAll('video:not([src])').length") >= 1
    for index in range(len(sources)):
        browser.evaluate(f"document.querySelectorAll('video')[{index}].scrollIntoView({{block: 'center'}})")
        browser.wait_for(lambda: browser.evaluate(
            f"document.querySelectorAll('video')[{index}].readyState") >= 2, timeout=30)
    durations = browser.evaluate("[...document.querySelectorAll('video')].map(v => v.duration)")
    for source, duration in zip(sources, durations):
        assert duration == pytest.approx(probe_video(renders / source).duration, abs=0.05), source
    assert browser.console_errors() == []
    urls = browser.requested_urls()
    assert any(u.startswith("file://") and u.endswith(".mp4") for u in urls)
    assert [u for u in urls if not u.startswith(("file://", "data:"))] == []


def _visible(browser: Chromium) -> list[str]:
    return list(browser.evaluate(
        "[...document.querySelectorAll('article.scene:not(.hidden)')].map(c => c.dataset.id)"))


def _current(browser: Chromium) -> str | None:
    return browser.evaluate("(document.querySelector('article.current') || {dataset: {}}).dataset.id || null")


def test_filter_and_keyboard(rendered: Path, browser: Chromium) -> None:
    browser.open((rendered / "renders/index.html").as_uri())
    assert _visible(browser) == ["intro", "pour", "crema"]
    browser.key("/", "Slash", 191, "/")
    assert browser.evaluate("document.activeElement.id") == "filter"
    browser.call("Input.insertText", {"text": "cre"})
    assert _visible(browser) == ["crema"]
    for _ in range(3):
        browser.key("Backspace", "Backspace", 8)
    assert _visible(browser) == ["intro", "pour", "crema"]
    browser.key("Escape", "Escape", 27)

    browser.key("ArrowDown", "ArrowDown", 40)
    assert _current(browser) == "intro"
    browser.key("ArrowRight", "ArrowRight", 39)
    assert _current(browser) == "pour"
    browser.key("ArrowDown", "ArrowDown", 40)
    browser.key("ArrowUp", "ArrowUp", 38)
    assert _current(browser) == "pour"

    picked = "document.querySelector('#scene-pour figure.picked video')"
    browser.wait_for(lambda: browser.evaluate(f"!{picked}.paused && {picked}.currentTime > 0"), timeout=30)
    browser.key(" ", "Space", 32, " ")
    assert browser.evaluate(f"{picked}.paused") is True
    browser.key(" ", "Space", 32, " ")
    assert browser.evaluate(f"{picked}.paused") is False
    browser.key("1", "Digit1", 49, "1")
    assert browser.evaluate(f"{picked}.dataset.active") == "1"
    assert browser.evaluate(f"!{picked}.paused") is True
    browser.key("9", "Digit9", 57, "9")  # no such take: nothing changes
    assert browser.evaluate(f"!{picked}.paused") is True

    # Crema's takes: side by side at one size; a digit plays that take and pauses the others.
    browser.key("ArrowDown", "ArrowDown", 40)
    assert _current(browser) == "crema"
    sizes = browser.evaluate("[...document.querySelectorAll('#scene-crema figure')].map(f => "
                             "[f.className, f.getBoundingClientRect().width, "
                             "f.querySelector('video').getBoundingClientRect().height])")
    assert [s[0] for s in sizes] == ["take picked after", "before", "take", "take"]
    assert len({round(s[1]) for s in sizes}) == 1 and len({round(s[2]) for s in sizes}) == 1, sizes
    take3 = "document.querySelector('#scene-crema figure[data-take=\"3\"] video')"
    crema = "document.querySelector('#scene-crema figure.picked video')"
    browser.key("3", "Digit3", 51, "3")
    browser.wait_for(lambda: browser.evaluate(f"!{take3}.paused && {take3}.currentTime > 0"), timeout=30)
    assert browser.evaluate(f"{crema}.paused") is True
    browser.key(" ", "Space", 32, " ")  # space now pauses the take being played
    assert browser.evaluate(f"{take3}.paused") is True
    browser.key("ArrowUp", "ArrowUp", 38)

    # A filtered-out card is skipped by the arrows.
    browser.key("/", "Slash", 191, "/")
    browser.call("Input.insertText", {"text": "intro crema"})
    browser.key("Enter", "Enter", 13)
    assert _current(browser) == "intro"
    browser.key("ArrowDown", "ArrowDown", 40)
    assert _current(browser) == "crema"
    browser.pump(0.5)
    assert browser.console_errors() == []


def test_no_op_apply_writes_a_missing_page_again(rendered: Path) -> None:
    page = rendered / "renders/index.html"
    text = page.read_text()
    page.unlink()
    assert sparkspec(rendered, "apply", "--auto-approve").returncode == 0
    assert page.read_text() == text  # with the last apply's before / after still on it


def test_the_films_timeline_names_its_members_and_jumps_to_one(rendered: Path, browser: Chromium) -> None:
    browser.open((rendered / "renders/index.html").as_uri())
    film = "document.querySelector('#sequence-spot video')"
    marks = browser.evaluate("[...document.querySelectorAll('#sequence-spot .timeline button')]"
                             ".map(b => [b.textContent, parseFloat(b.dataset.start)])")
    # intro's 3 s are 73 frames, as the API renders them (24 a second plus one): pour starts at 73 / 24 s.
    pour = 73 / 24
    assert marks == [["intro", 0.0], ["pour", pytest.approx(pour, abs=0.001)],
                     ["crema", pytest.approx(pour + 49 / 24, abs=0.001)]]
    browser.evaluate("document.querySelector('#sequence-spot .timeline button[title^=\"pour\"]').click()")
    browser.wait_for(lambda: browser.evaluate(f"{film}.readyState >= 2 && !{film}.paused"), timeout=30)
    assert pour - 0.001 <= browser.evaluate(f"{film}.currentTime") < pour + 49 / 24
    browser.wait_for(lambda: browser.evaluate(
        "(document.querySelector('#sequence-spot .timeline button.on') || {}).textContent === 'pour'"), timeout=10)
    assert browser.console_errors() == []
