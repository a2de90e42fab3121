"""renders/index.html: the review page. One self-contained file (CSS and script inline, no
font, no CDN), linking only the media beside it, so it works opened from disk with no network.

Laid out here in Python, every value from the spec or the lock escaped (markupsafe's
`escape`, as a template's autoescaping would): prompts and descriptions are shown as text,
never as markup. The page was a Jinja template; importing Jinja and compiling the template
was a tenth of a second or more of every apply of a spec without templated prompts, and a
clone's apply did it while its pulls streamed (benchmarks/RESULTS.md, session 18).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from markupsafe import escape

from sparkspec.fsutil import atomic_write_text
from sparkspec.review import PAGE
from sparkspec.review.model import Review, ReviewScene, ReviewSequence

_HERE = Path(__file__).parent

KEYS = ('<span class="keys"><kbd>&larr;</kbd><kbd>&rarr;</kbd> move &middot; <kbd>space</kbd> play/pause &middot; '
        '<kbd>1</kbd>-<kbd>8</kbd> play a take &middot; <kbd>/</kbd> filter &middot; '
        '<a href="contact.png" style="color:inherit">contact sheet</a></span>')


def _e(value: object) -> str:
    return str(escape(value))


def _s(count: int) -> str:
    return "s" if count != 1 else ""


def _code(full: str, shown: str) -> str:
    return f'<code title="{_e(full)}">{_e(shown)}</code>'


def _video(src: str, poster: str | None, aspect: str) -> str:
    attrs = f'data-src="{_e(src)}"' + (f' data-poster="{_e(poster)}"' if poster is not None else "")
    return f'<video {attrs} muted loop playsinline preload="none" style="aspect-ratio:{_e(aspect)}"></video>'


def _stats(review: Review) -> str:
    takes = sum(len(s.takes) for s in review.scenes)
    costs = [s.cost for s in review.scenes if s.cost is not None]
    changed = sum(1 for s in review.scenes if s.changed or s.new_takes)
    text = (f"{len(review.scenes)} scene{_s(len(review.scenes))}, {takes} take{_s(takes)}, "
            f"{sum(s.tokens for s in review.scenes):,} tokens")
    if costs:
        text += f", {sum(costs):.2f}"
    if changed:
        text += f", {changed} changed in the last apply"
    return f'<span class="stats">{_e(text)}</span>'


def _sequence(seq: ReviewSequence) -> str:
    buttons, start = [], 0.0
    for member, seconds in seq.members:
        buttons.append(f'<button type="button" data-start="{start:.3f}" style="flex-grow:'
                       f'{seconds if seconds > 0 else 1:.3f}" title="{_e(member)}: from {start:.1f} s">'
                       f'{_e(member)}</button>')
        start += seconds
    return (f'<section class="card film" id="sequence-{_e(seq.id)}" data-sequence="{_e(seq.id)}">\n'
            f'<h3>{_e(seq.id)} <span class="chain">{len(seq.members)} scene{_s(len(seq.members))}</span></h3>\n'
            + ('<p class="gone">stitched before the spec changed its scenes: the next apply stitches it '
               'again</p>\n' if seq.stale else '') +
            f'<video data-src="{_e(seq.video)}" controls playsinline preload="none"></video>\n'
            f'<div class="timeline">{"".join(buttons)}</div>\n'
            '</section>\n')


def _heading(scene: ReviewScene) -> str:
    parts = [f"<h3>{_e(scene.id)}"]
    if scene.upstream:
        parts.append(f' <span class="chain">from <a href="#scene-{_e(scene.upstream)}">&larr; '
                     f'{_e(scene.upstream)}</a></span>')
    if scene.downstream:
        links = " ".join(f'<a href="#scene-{_e(d)}">{_e(d)} &rarr;</a>' for d in scene.downstream)
        parts.append(f' <span class="chain">to {links}</span>')
    if scene.changed:
        parts.append(' <span class="badge">changed</span>')
    elif scene.new:
        parts.append(' <span class="badge">new</span>')
    elif scene.new_takes:
        numbers = ", ".join(str(n) for n in sorted(scene.new_takes))
        parts.append(f' <span class="badge">new take{"s" if len(scene.new_takes) > 1 else ""} {numbers}</span>')
    return "".join(parts) + "</h3>\n"


def _takes(scene: ReviewScene) -> str:
    picked = scene.picked
    caption = f"<b>take {picked.number}{' (picked)' if len(scene.takes) > 1 and picked.number == scene.pick else ''}</b>"
    caption += f"{' · after' if scene.before else ''} · seed {picked.seed}"
    if picked.number != scene.pick:
        caption += f' · <span class="gone">the picked take {scene.pick} did not render</span>'
    row = [f'<div class="row"><figure class="take picked{" after" if scene.before else ""}" '
           f'data-take="{picked.number}">{_video(picked.video, picked.poster, scene.aspect)}'
           f"<figcaption>{caption}</figcaption></figure>"]
    if scene.before:
        row.append(f'<figure class="before">{_video(scene.before, None, scene.aspect)}'
                   "<figcaption>before (the previous render)</figcaption></figure>")
    for take in scene.takes:
        if take.number == picked.number:
            continue
        new = " · new" if take.number in scene.new_takes and not scene.new else ""
        row.append(f'<figure class="take" data-take="{take.number}">{_video(take.video, take.poster, scene.aspect)}'
                   f"<figcaption>take {take.number}{new} · seed {take.seed} · "
                   f"{_code(take.key, take.key[:12])} · {take.tokens:,} tokens"
                   f"{f' · cost {take.cost:,.2f}' if take.cost is not None else ''}"
                   f" · task {_code(take.task_id, take.task_id)}</figcaption></figure>")
    return "".join(row) + "</div>\n"


def _pairs(scene: ReviewScene) -> str:
    picked = scene.picked

    def pair(name: str, value: str) -> str:
        return f"<dt>{_e(name)}</dt><dd>{value}</dd>"

    # The seed is the picked take's caption's; a page of thousands of cards counts its bytes.
    head = "".join(pair(name, _e(value)) for name, value in scene.parameters)
    cost = pair("cost", f"{scene.cost:.2f}") if scene.cost is not None else ""
    return (f"<dl>{head}\n{pair('tokens', f'{scene.tokens:,}')}{cost}"
            f"{pair('key', _code(picked.key, picked.key[:12]))}\n{pair('task', _code(picked.task_id, picked.task_id))}\n"
            "</dl>\n")


def _scene(scene: ReviewScene) -> str:
    parts = [f'<article class="card scene" id="scene-{_e(scene.id)}" data-id="{_e(scene.id)}">\n',
             _heading(scene)]
    if scene.description:
        parts.append(f'<p class="desc">{_e(scene.description)}</p>')
    parts.append(_takes(scene))
    if scene.not_rendered and scene.picked.number == scene.pick:
        what = f"take {scene.pick}" if len(scene.takes) > 1 else "this scene"
        parts.append(f'<p class="gone">The last apply did not render {what} ({_e(scene.not_rendered)}); what is '
                     "shown is the render from before, which no longer matches the spec.</p>\n")
    if scene.changed and not scene.before:
        parts.append('<p class="gone">Changed in the last apply; the previous render is not in this machine\'s '
                     "cache.</p>")
    parts.append(f'<p class="prompt">{_e(scene.prompt.strip())}</p>\n')
    parts.append(_pairs(scene))
    parts.append("</article>\n")
    return "".join(parts)


def _page(review: Review) -> Iterator[str]:
    title = _e(review.title)
    yield ('<!doctype html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
           '<meta name="viewport" content="width=device-width, initial-scale=1">\n<link rel="icon" href="data:,">\n'
           f"<title>{title}: review</title>\n<style>\n")
    yield (_HERE / "page.css").read_text(encoding="utf-8")
    yield (f'</style>\n</head>\n<body>\n<header>\n<h1>{title}</h1>\n{_stats(review)}\n'
           '<input id="filter" type="search" placeholder="filter by scene id" aria-label="filter by scene id" '
           f'autocomplete="off">\n{KEYS}\n</header>\n<main>\n')
    if review.sequences:
        yield '<h2 class="section">Sequences</h2>\n'
        yield from (_sequence(seq) for seq in review.sequences)
    yield '<h2 class="section">Scenes</h2>\n'
    yield from (_scene(scene) for scene in review.scenes)
    yield f'</main>\n<script>\n{(_HERE / "page.js").read_text(encoding="utf-8")}\n</script>\n</body>\n</html>\n'


def render_page(review: Review) -> str:
    return "".join(_page(review))


def write_page(output: Path, review: Review) -> Path:
    """Write the page (only when its text changed, so a no-op apply leaves it untouched)."""
    dest = output / PAGE
    page = render_page(review)
    try:
        if dest.read_text(encoding="utf-8") == page:
            return dest
    except (OSError, UnicodeDecodeError):
        pass
    atomic_write_text(dest, page)
    return dest
