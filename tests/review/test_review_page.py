"""renders/index.html and renders/contact.png, from the lock and the project, with real clips."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import av
import pytest
from PIL import Image, ImageDraw, ImageFont

from review.conftest import FRAMES, SPEC, frame_color, settle, workspace_of

from sparkspec.review import write_review
from sparkspec.review.contact import BACKGROUND, GAP, LABEL, TEXT, THUMB_WIDTH

SPEC_TEXT = """\
version: 1
name: review-test
provider: {type: local}
defaults: {resolution: 480p, ratio: "16:9", seed: 5}
scenes:
  logo:
    prompt: "The <b>logo</b> & a tagline"
    description: Last shot.
  intro:
    prompt: "A cup on a counter"
  pour:
    first_frame: {scene: intro}
    prompt: "Coffee pours"
    frames: 49
sequences:
  film: {scenes: [intro, pour]}
"""


class Page(HTMLParser):
    """The tags and attributes of a page, and its text."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str]]] = []
        self.text: list[str] = []
        self.feed(text)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, {k: v or "" for k, v in attrs}))

    def handle_data(self, data: str) -> None:
        self.text.append(data)

    def all(self, tag: str, **where: str) -> list[dict[str, str]]:
        return [a for t, a in self.tags if t == tag and all(where[k] in a.get(k, "").split() for k in where)]


@pytest.fixture
def root(tmp_path: Path) -> Path:
    project = tmp_path / "project"
    project.mkdir()
    (project / SPEC).write_text(SPEC_TEXT)
    return project


def review(root: Path, previous: object = None) -> list[Path]:
    workspace = workspace_of(root)
    try:
        return write_review(workspace, previous)  # type: ignore[arg-type]
    finally:
        workspace.close()


def test_one_card_per_scene_in_graph_order_with_what_made_it(root: Path, tmp_path: Path) -> None:
    lock = settle(root, tmp_path / "clips", {"logo": 1, "intro": 2, "pour": 3})
    written = review(root)
    assert [p.name for p in written] == ["index.html", "contact.png"]
    text = (root / "renders/index.html").read_text()
    page = Page(text)
    cards = page.all("article", **{"class": "scene"})
    assert [c["data-id"] for c in cards] == ["logo", "intro", "pour"]  # pour after the scene it starts from
    links = [a["href"] for a in page.all("a")]
    assert "#scene-intro" in links and "#scene-pour" in links and "contact.png" in links
    assert "The <b>logo</b> & a tagline" in "".join(page.text)  # shown as text, not markup
    assert "<b>logo</b>" not in text
    pour = lock.scenes["pour"]
    for shown in (pour.key[:12], pour.task_id, f"{pour.tokens:,}", "49", "480p", "16:9", "Last shot."):
        assert shown in text, shown
    videos = page.all("video")
    assert all("src" not in v for v in videos)  # loaded lazily, by the script
    sources = [v["data-src"] for v in videos]
    assert sources == ["film.mp4", "logo.mp4", "intro.mp4", "pour.mp4"]
    assert [v.get("data-poster") for v in videos[1:]] == ["logo.last.png", "intro.last.png", "pour.last.png"]
    assert all((root / "renders" / s).is_file() for s in sources)
    timeline = [a for t, a in page.tags if t == "button" and "data-start" in a]
    assert [b["title"].split(":")[0] for b in timeline] == ["intro", "pour"]
    # intro lasts 5 s as the API renders it: 24 frames a second plus one, so pour starts at 121 / 24 s
    # in the stitched film (at 5.0 s the film still shows intro).
    assert [float(b["data-start"]) for b in timeline] == [0.0, round(121 / 24, 3)]


def test_a_film_not_stitched_since_its_scenes_changed_is_drawn_as_it_is(root: Path, tmp_path: Path) -> None:
    """A targeted apply leaves the film as it was stitched: its timeline is the clips the lock
    records it holds (not the spec's new member list, whose points lie past its end), and the
    card says the next apply stitches it again."""
    settle(root, tmp_path / "clips", {"logo": 1, "intro": 2, "pour": 3})
    spec = root / SPEC
    spec.write_text(spec.read_text().replace("film: {scenes: [intro, pour]}", "film: {scenes: [intro, logo, pour, intro]}"))
    review(root)
    page = Page((root / "renders/index.html").read_text())
    timeline = [a for t, a in page.tags if t == "button" and "data-start" in a]
    assert [b["title"].split(":")[0] for b in timeline] == ["intro", "pour"]
    assert "stitched before the spec changed its scenes" in "".join(page.text)
    spec.write_text(SPEC_TEXT)
    review(root)
    assert "stitched before" not in (root / "renders/index.html").read_text()


def test_self_contained_no_network(root: Path, tmp_path: Path) -> None:
    settle(root, tmp_path / "clips", {"logo": 1, "intro": 2, "pour": 3})
    review(root)
    page = Page((root / "renders/index.html").read_text())
    for tag, attrs in page.tags:
        for name in ("src", "href", "data-src", "data-poster", "poster"):
            value = attrs.get(name, "")
            assert "//" not in value and not value.startswith("http"), (tag, name, value)
        assert not (tag == "link" and attrs.get("rel") == "stylesheet")
        assert not (tag == "script" and attrs.get("src"))
    assert all(a["href"] == "data:," for a in page.all("link"))  # no favicon request
    text = (root / "renders/index.html").read_text()
    assert "http://" not in text and "https://" not in text and "@import" not in text and "url(" not in text


def test_before_and_after_for_what_the_last_apply_changed(root: Path, tmp_path: Path) -> None:
    first = settle(root, tmp_path / "clips", {"logo": 1, "intro": 2, "pour": 3})
    old_pour = (root / "renders/pour.mp4").read_bytes()
    second = settle(root, tmp_path / "clips", {"logo": 1, "intro": 2, "pour": 4})
    review(root, first)
    before = root / "renders/before" / f"pour.{first.scenes['pour'].video.sha256[:12]}.mp4"
    assert before.read_bytes() == old_pour
    page = Page((root / "renders/index.html").read_text())
    befores = page.all("figure", **{"class": "before"})
    assert len(befores) == 1
    assert [v["data-src"] for v in page.all("video") if v["data-src"].startswith("before/")] == [
        f"before/{before.name}"]
    # A page written again without an apply (e.g. it was deleted) keeps the last apply's before/after.
    (root / "renders/index.html").unlink()
    review(root, None)
    assert f"before/{before.name}" in (root / "renders/index.html").read_text()
    # So does an apply that changed no scene's video (it restored a file, deleted a take, reused).
    review(root, second)
    assert before.exists() and f"before/{before.name}" in (root / "renders/index.html").read_text()
    # The next apply that changes something else replaces it.
    settle(root, tmp_path / "clips", {"logo": 9, "intro": 2, "pour": 4})
    review(root, second)
    assert not before.exists()
    assert [p.name.split(".")[0] for p in (root / "renders/before").iterdir()] == ["logo"]


def test_a_before_folder_that_is_a_symlink_out_is_refused_and_nothing_is_written_there(root: Path,
                                                                                        tmp_path: Path) -> None:
    """renders/before linked to a folder outside: the previous renders were copied there, and
    deleted from there by the next apply."""
    from sparkspec.errors import StatePathError

    first = settle(root, tmp_path / "clips", {"logo": 1, "intro": 2, "pour": 3})
    settle(root, tmp_path / "clips", {"logo": 1, "intro": 2, "pour": 4})
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "precious.mp4").write_bytes(b"mine")
    (root / "renders/before").symlink_to(outside)
    with pytest.raises(StatePathError, match="renders/before: a symlink out of the output folder"):
        review(root, first)
    assert sorted(p.name for p in outside.iterdir()) == ["precious.mp4"]


def test_a_previous_render_gone_from_the_cache_is_said(root: Path, tmp_path: Path) -> None:
    first = settle(root, tmp_path / "clips", {"logo": 1, "intro": 2, "pour": 3})
    settle(root, tmp_path / "clips", {"logo": 1, "intro": 2, "pour": 4})
    workspace = workspace_of(root)
    workspace.cache.blob_path(first.scenes["pour"].video.sha256).unlink()
    workspace.close()
    review(root, first)
    text = (root / "renders/index.html").read_text()
    assert "the previous render is not in this machine's cache" in text
    assert 'class="badge">changed' in text


def test_contact_sheet_has_first_middle_and_last_frame_per_scene(root: Path, tmp_path: Path) -> None:
    settle(root, tmp_path / "clips", {"logo": 1, "intro": 2, "pour": 3})
    review(root)
    sheet = Image.open(root / "renders/contact.png").convert("RGB")
    height = round(THUMB_WIDTH * 90 / 160)
    columns = (sheet.width - GAP) // (3 * THUMB_WIDTH + 3 * GAP)
    for n, (scene, base) in enumerate((("logo", 1), ("intro", 2), ("pour", 3))):
        x0 = GAP + (n % columns) * (3 * THUMB_WIDTH + 3 * GAP)
        y0 = GAP + (n // columns) * (LABEL + height + GAP) + LABEL
        for at, index in enumerate((0, FRAMES // 2, FRAMES - 1)):
            pixel = sheet.getpixel((x0 + at * (THUMB_WIDTH + GAP) + THUMB_WIDTH // 2, y0 + height // 2))
            wanted = frame_color(base, index)
            assert max(abs(p - w) for p, w in zip(pixel, wanted)) <= 6, (scene, index, pixel, wanted)  # type: ignore[arg-type]
        # Above the strip, the scene's id, as Pillow writes that text.
        label = sheet.crop((x0, y0 - LABEL, x0 + 3 * THUMB_WIDTH + 2 * GAP, y0))
        written = Image.new("RGB", label.size, BACKGROUND)
        ImageDraw.Draw(written).text((0, 2), scene, fill=TEXT, font=ImageFont.load_default(size=14))
        assert label.tobytes() == written.tobytes(), scene


def test_the_sheet_is_its_strips_cache_no_file_a_strip(root: Path, tmp_path: Path) -> None:
    """The next review crops the strips of the videos it did not change out of the sheet it
    replaces (the record says where each lies): a video that would no longer decode is not
    decoded. No thumbnail file is kept beside the record."""
    settle(root, tmp_path / "clips", {"logo": 1, "intro": 2, "pour": 3})
    review(root)
    first = (root / "renders/contact.png").read_bytes()
    assert sorted(p.name for p in (root / ".sparkspec/review").glob("*.png")) == []
    (root / "renders/logo.mp4").write_bytes(b"not a video any more")
    review(root)
    assert (root / "renders/contact.png").read_bytes() == first


def test_a_sheet_changed_by_hand_is_not_cropped_from(root: Path, tmp_path: Path) -> None:
    """A sheet other than the one recorded (saved again by an editor, replaced, damaged) or a
    record that does not fit it: its strips are decoded from the videos again."""
    settle(root, tmp_path / "clips", {"logo": 1, "intro": 2, "pour": 3})
    review(root)
    sheet = root / "renders/contact.png"
    first = sheet.read_bytes()
    with Image.open(sheet) as image:
        image.save(sheet, optimize=True)  # the same pixels, other bytes: not the recorded file
    assert sheet.read_bytes() != first
    review(root)
    assert sheet.read_bytes() == first
    record = root / ".sparkspec/review/sheet.json"
    data = json.loads(record.read_text())
    data["cells"] = [[sha, 10_000, 10_000, 5, 5] for sha, *_ in data["cells"]]  # boxes off the picture
    record.write_text(json.dumps(data))
    review(root)
    assert sheet.read_bytes() == first
    record.write_text(json.dumps({"sha256": data["sha256"], "cells": "nonsense"}))
    review(root)
    assert sheet.read_bytes() == first


def test_the_middle_frame_is_the_same_decoded_on_or_sought(root: Path, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """A middle frame near the first is decoded on to; a far one is sought from the keyframe
    before it. Both find the same frame."""
    from sparkspec.review import contact

    seeks: list[object] = []
    real_open = av.open

    class Counted:
        def __init__(self, inner: Any) -> None:
            self.inner = inner

        def __enter__(self) -> Counted:
            self.inner.__enter__()
            return self

        def __exit__(self, *exc: object) -> Any:
            return self.inner.__exit__(*exc)

        def seek(self, *args: Any, **kwargs: Any) -> Any:
            seeks.append(args)
            return self.inner.seek(*args, **kwargs)

        def __getattr__(self, name: str) -> Any:
            return getattr(self.inner, name)

    monkeypatch.setattr(av, "open", lambda *args, **kwargs: Counted(real_open(*args, **kwargs)))
    settle(root, tmp_path / "clips", {"logo": 1, "intro": 2, "pour": 3})
    review(root)
    near = (root / "renders/contact.png").read_bytes()
    assert seeks == []
    shutil.rmtree(root / ".sparkspec/review")
    (root / "renders/contact.png").unlink()
    monkeypatch.setattr(contact, "FORWARD_SECONDS", 0)
    review(root)
    assert len(seeks) == 3
    assert (root / "renders/contact.png").read_bytes() == near


def test_a_page_that_cannot_be_written_is_a_message(root: Path, tmp_path: Path) -> None:
    from sparkspec.errors import StatePathError

    settle(root, tmp_path / "clips", {"logo": 1, "intro": 2, "pour": 3})
    (root / "renders/index.html").mkdir()
    with pytest.raises(StatePathError, match="cannot write the review page"):
        review(root)


def test_takes_side_by_side_with_the_pick_first(root: Path, tmp_path: Path) -> None:
    from dataclasses import replace

    from sparkspec.state.lockfile import FileRecord, read_lock, scene_entry, write_lock

    settle(root, tmp_path / "clips", {"logo": 1, "intro": 2, "pour": 3})
    lock_file = root / "project.spark.lock"
    lock, _ = read_lock(lock_file)
    top = lock.scenes["pour"]
    takes = []
    for number in (1, 2, 3):  # as apply records them: take 2, picked, at the scene's own names
        stem = "pour" if number == 2 else f"pour.take{number}"
        video = FileRecord(f"renders/{stem}.mp4", f"{number}" * 64, top.video.bytes)
        frame = FileRecord(f"renders/{stem}.last.png", f"{number + 3}" * 64, top.last_frame.bytes)
        if number != 2:
            (root / video.path).write_bytes((root / top.video.path).read_bytes())
            (root / frame.path).write_bytes((root / top.last_frame.path).read_bytes())
        takes.append(replace(top, key=f"{number:x}" * 64, seed=100 + number, video=video, last_frame=frame,
                             take=number))
    picked = scene_entry({t.take: t for t in takes}, 2)
    write_lock(lock_file, replace(lock, scenes={**lock.scenes, "pour": picked}))
    review(root)
    page = Page((root / "renders/index.html").read_text())
    card = (root / "renders/index.html").read_text().split('id="scene-pour"')[1]
    figures = Page(card).all("figure")
    assert [f["data-take"] for f in figures] == ["2", "1", "3"]
    assert "picked" in figures[0]["class"]
    assert all("muted" in v and "loop" in v for v in Page(card).all("video"))  # the pick plays muted, looping
    assert [v["data-src"] for v in Page(card).all("video")] == ["pour.mp4", "pour.take1.mp4", "pour.take3.mp4"]
    assert "take 2 (picked)" in card and "seed 101" in card and "seed 103" in card
    assert len(page.all("video")) == 6  # the film, logo, intro and pour's three takes


def test_contact_sheet_of_a_large_project_covers_the_first_scenes_and_says_how_many_more(
        root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from sparkspec.review import contact

    settle(root, tmp_path / "clips", {"logo": 1, "intro": 2, "pour": 3})
    monkeypatch.setattr(contact, "MAX_SCENES", 2)
    review(root)
    sheet = Image.open(root / "renders/contact.png").convert("RGB")
    height = round(THUMB_WIDTH * 90 / 160)
    assert sheet.width == GAP + 3 * THUMB_WIDTH + 3 * GAP  # one column: two strips, then the note
    assert sheet.height == GAP + 3 * (LABEL + height + GAP)
    background = ((20, 20), (22, 22), (26, 26))
    cell = LABEL + height + GAP
    for n in (0, 1):  # two scenes' thumbnails
        thumb = sheet.crop((GAP, GAP + n * cell + LABEL, GAP + THUMB_WIDTH, GAP + n * cell + LABEL + height))
        assert thumb.getextrema() != background
    note = sheet.crop((GAP, GAP + 2 * cell, GAP + 3 * THUMB_WIDTH, GAP + 2 * cell + LABEL))
    assert note.getextrema() != background  # "+ 1 more scene: see index.html"
    below = sheet.crop((GAP, GAP + 2 * cell + LABEL, GAP + 3 * THUMB_WIDTH, GAP + 2 * cell + LABEL + height))
    assert below.getextrema() == background  # and no third thumbnail


def test_an_apply_shows_each_cards_cost_at_the_specs_price(tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    # The local provider reports tokens and no cost: the page costs them at the spec's price,
    # as the plan does.
    from cli_runner import run_here

    project = tmp_path / "priced"
    project.mkdir()
    (project / SPEC).write_text("""\
version: 1
name: priced
provider: {type: local, price_per_million_tokens: 40}
defaults: {resolution: 480p, ratio: "16:9", frames: 29, seed: 3}
scenes:
  hero: {prompt: "A cup", takes: 2}
""")
    assert run_here("apply", "--auto-approve", cwd=project, monkeypatch=monkeypatch).code == 0
    record = json.loads((project / "project.spark.lock").read_text())["scenes"]["hero"]
    tokens = sum(take["tokens"] for take in record["takes"])
    cost = f"{tokens / 1e6 * 40:.2f}"
    text = (project / "renders/index.html").read_text()
    assert f"<dt>cost</dt><dd>{cost}</dd>" in text
    assert f"{tokens:,} tokens, {cost}" in text  # the header's total
    # Each take beside the picked one says its own tokens, cost and task.
    other = record["takes"][1]
    assert (f"{other['tokens']:,} tokens · cost {other['tokens'] / 1e6 * 40:.2f} · task "
            f'<code title="{other["task_id"]}">{other["task_id"]}</code>') in text


def test_every_value_from_the_spec_or_the_lock_is_shown_as_text() -> None:
    """The page is laid out in Python: each value is escaped where it is put, none is markup."""
    from sparkspec.review.model import Review, ReviewScene, ReviewSequence, Take
    from sparkspec.review.page import render_page

    bad = "<i>x</i>&\"'"
    take = Take(number=1, video=bad, poster=bad, seed=7, key=bad, task_id=bad, tokens=10, cost=None)
    other = Take(number=2, video=bad, poster=bad, seed=8, key=bad, task_id=bad, tokens=10, cost=None)
    scene = ReviewScene(id=bad, prompt=bad, description=bad, parameters=((bad, bad),), takes=(take, other), pick=1,
                        seconds=5.0, aspect=bad, upstream=bad, downstream=(bad,), before=bad, changed=True,
                        not_rendered=bad)
    page = render_page(Review(title=bad, scenes=(scene,), sequences=(ReviewSequence(bad, bad, ((bad, 5.0),)),)))
    assert "<i>" not in page and "</i>" not in page
    # title 2, the sequence 6, the scene 28 (ids 3, links 4, description, prompt, videos 8,
    # not rendered, parameter 2, keys 4, task 4: the picked take's and take 2's)
    assert page.count("&lt;i&gt;x&lt;/i&gt;&amp;&#34;&#39;") == 36


def test_writing_the_page_does_not_import_jinja(tmp_path: Path) -> None:
    """Importing Jinja and compiling a template was a tenth of a second of every apply."""
    code = ("import sys; from pathlib import Path; from sparkspec.review.model import Review; "
            "from sparkspec.review.page import write_page; write_page(Path('.'), Review('t', (), ())); "
            "print('jinja2' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False"]
    assert "<title>t: review</title>" in (tmp_path / "index.html").read_text()


@pytest.mark.slow  # over 0.7 s: the default run stays under 90 s on a fresh clone
def test_an_apply_with_nothing_to_render_brings_the_page_and_its_media_up_to_date(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The page kept old descriptions and costs after edits that render nothing, pointed at
    before/ files deleted by hand, and a contact.png overwritten with junk stayed junk."""
    from cli_runner import run_here

    project = tmp_path / "edited"
    project.mkdir()
    spec = project / SPEC
    spec.write_text("""\
version: 1
name: edited
provider: {type: local, price_per_million_tokens: 40}
defaults: {resolution: 480p, ratio: "16:9", frames: 29, seed: 3}
scenes:
  hero: {prompt: "A cup", description: "The first shot."}
""")
    assert run_here("apply", "--auto-approve", cwd=project, monkeypatch=monkeypatch).code == 0
    spec.write_text(spec.read_text().replace("A cup", "A mug"))
    assert run_here("apply", "--auto-approve", cwd=project, monkeypatch=monkeypatch).code == 0
    page = project / "renders/index.html"
    assert "before/hero." in page.read_text()
    spec.write_text(spec.read_text().replace("The first shot.", "The opening shot.").replace("name: edited",
                                                                                              "name: renamed")
                    .replace("price_per_million_tokens: 40", "price_per_million_tokens: 80"))
    assert run_here("apply", "--auto-approve", cwd=project, monkeypatch=monkeypatch).code == 0
    text = page.read_text()
    tokens = json.loads((project / "project.spark.lock").read_text())["scenes"]["hero"]["tokens"]
    assert "The opening shot." in text and "<title>renamed: review</title>" in text
    assert f"<dt>cost</dt><dd>{tokens / 1e6 * 80:.2f}</dd>" in text
    assert "before/hero." in text  # what the last render changed is still shown
    shutil.rmtree(project / "renders/before")
    (project / "renders/contact.png").write_text("junk")
    unchanged = page.stat().st_mtime_ns
    assert run_here("apply", "--auto-approve", cwd=project, monkeypatch=monkeypatch).code == 0
    assert "before/" not in page.read_text() and page.stat().st_mtime_ns != unchanged
    with Image.open(project / "renders/contact.png") as sheet:
        assert sheet.format == "PNG"
    mtime = page.stat().st_mtime_ns
    assert run_here("apply", "--auto-approve", cwd=project, monkeypatch=monkeypatch).code == 0
    assert page.stat().st_mtime_ns == mtime  # nothing new: the page is not written again


def test_a_sheet_with_videos_not_in_renders_yet_says_so(root: Path, tmp_path: Path) -> None:
    """A targeted apply on a fresh clone: other scenes' videos are not in renders/ yet and no
    earlier sheet holds their strips. The sheet is not written, and the warning says why in
    those words (not 'cannot decode a frame'); the page is written."""
    from sparkspec.errors import MediaError

    settle(root, tmp_path / "clips", {"logo": 1, "intro": 2, "pour": 3})
    (root / "renders/logo.mp4").unlink()
    (root / "renders/pour.mp4").unlink()
    with pytest.raises(MediaError, match=r"logo.mp4 and 1 more not in renders/ yet; an apply of every scene"):
        review(root)
    assert (root / "renders/index.html").is_file() and not (root / "renders/contact.png").exists()
