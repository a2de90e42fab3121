"""renders/index.html: the review page. One self-contained file (CSS and script inline, no
font, no CDN), linking only the media beside it, so it works opened from disk with no network.

Laid out by a Jinja2 template with autoescaping on: prompts and descriptions come from the
spec and are shown as text, never as markup.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import TYPE_CHECKING

from sparkspec.fsutil import atomic_write_text
from sparkspec.review import PAGE
from sparkspec.review.model import Review

if TYPE_CHECKING:
    import jinja2

_HERE = Path(__file__).parent
TEMPLATE = "page.html.j2"


@functools.cache
def _template(compiled: Path | None = None) -> jinja2.Template:
    """The page's template. `compiled`: a folder keeping its compiled code between runs
    (compiling it is a tenth of a second of every apply); anything wrong there, and it is
    compiled afresh."""
    import jinja2

    def environment(cache: jinja2.BytecodeCache | None) -> jinja2.Environment:
        return jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined, trim_blocks=True,
                                  lstrip_blocks=True, keep_trailing_newline=True, bytecode_cache=cache,
                                  loader=jinja2.FileSystemLoader(_HERE))

    if compiled is not None:
        try:
            compiled.mkdir(parents=True, exist_ok=True)
            return environment(jinja2.FileSystemBytecodeCache(str(compiled))).get_template(TEMPLATE)
        except Exception:  # noqa: BLE001 - a read-only or damaged cache: compile without it
            pass
    return environment(None).get_template(TEMPLATE)


def render_page(review: Review, compiled: Path | None = None) -> str:
    from markupsafe import Markup

    costs = [s.cost for s in review.scenes if s.cost is not None]
    return _template(compiled).render(
        review=review,
        takes=sum(len(s.takes) for s in review.scenes),
        tokens=sum(s.tokens for s in review.scenes),
        cost=sum(costs) if costs else None,
        changed=sum(1 for s in review.scenes if s.changed or s.new_takes),
        script=Markup((_HERE / "page.js").read_text(encoding="utf-8")))


def write_page(output: Path, review: Review, compiled: Path | None = None) -> Path:
    """Write the page (only when its text changed, so a no-op apply leaves it untouched).
    `compiled`: where the template's compiled code is kept between runs."""
    dest = output / PAGE
    page = render_page(review, compiled)
    try:
        if dest.read_text(encoding="utf-8") == page:
            return dest
    except (OSError, UnicodeDecodeError):
        pass
    atomic_write_text(dest, page)
    return dest
