"""Materialising cached blobs into renders/ and checking what a provider delivered."""

from __future__ import annotations

from pathlib import Path

from sparkspec.fsutil import atomic_copy


def materialize(blob: Path, dest: Path) -> None:
    """Copy a cached blob into renders/ (a copy, not a link: users may edit renders/)."""
    atomic_copy(blob, dest)


def remove_output(path: Path) -> bool:
    try:
        path.unlink()
        return True
    except FileNotFoundError:
        return False


def write_index(output_dir: Path, title: str, scenes: dict[str, tuple[str, str]],
                sequences: dict[str, str]) -> None:
    """renders/index.html: every clip and sequence on one page, to look at in a browser.

    `scenes` maps an id to its (video, last frame) paths and `sequences` a name to its
    video, all relative to the project; the page links them relative to itself.
    """
    from html import escape

    def rel(path: str) -> str:
        return escape(path.split("/", 1)[1] if "/" in path else path, quote=True)

    cards = [f'<figure><video src="{rel(video)}" poster="{rel(frame)}" controls muted loop preload="none">'
             f"</video><figcaption>{escape(sid)}</figcaption></figure>"
             for sid, (video, frame) in sorted(scenes.items())]
    films = [f'<figure><video src="{rel(video)}" controls preload="none"></video>'
             f"<figcaption>sequence {escape(name)}</figcaption></figure>"
             for name, video in sorted(sequences.items())]
    page = "\n".join([
        "<!doctype html>", '<meta charset="utf-8">', f"<title>{escape(title)}: renders</title>",
        "<style>body{font-family:sans-serif;margin:2em}figure{display:inline-block;margin:.5em}"
        "video{width:320px;background:#000}</style>",
        f"<h1>{escape(title)}</h1>",
        *(["<h2>Sequences</h2>", *films] if films else []),
        "<h2>Scenes</h2>", *cards, ""])
    dest = output_dir / "index.html"
    try:
        if dest.read_text(encoding="utf-8") == page:
            return
    except OSError:
        pass
    from sparkspec.fsutil import atomic_write_text

    atomic_write_text(dest, page)
