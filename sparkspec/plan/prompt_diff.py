"""A word-level diff of two prompts, in git's --word-diff=plain notation."""

from __future__ import annotations

import difflib
import re

_WORDS = re.compile(r"(\s*)(\S+)")
_VISIBLE = str.maketrans({" ": "·", "\t": "→", "\n": "↵"})


def _split(text: str) -> tuple[list[str], list[str], str]:
    """The words of `text`, the whitespace before each, and the whitespace after the last."""
    words, gaps, end = [], [], 0
    for match in _WORDS.finditer(text):
        gaps.append(match.group(1))
        words.append(match.group(2))
        end = match.end()
    return words, gaps, text[end:]


def _gap(old: str, new: str) -> str:
    """Whitespace between unchanged words: as it is, or, where it changed (and the key with
    it), shown (a space as ·, a tab as →, a line break as ↵) rather than printed as the new
    spacing with nothing marked."""
    if old == new:
        return new
    return (f"[-{old.translate(_VISIBLE)}-]" if old else "") + (f"{{+{new.translate(_VISIBLE)}+}}" if new else "")


def word_diff(old: str, new: str) -> str:
    """`Coffee [-pours-] {+drips+} from the machine`; `plain text to[-·-]{+··+}video {+now+}`.

    Words are compared as words, and the whitespace between two words kept on both sides as a
    gap of its own: a changed gap is marked even beside a changed word. A gap next to a
    changed word is printed as the new prompt has it (or the old, where the new has none: a
    word removed from the start still stands apart from the next)."""
    a, a_gaps, a_end = _split(old)
    b, b_gaps, b_end = _split(new)
    out: list[str] = []
    after_change = False
    for op, i1, i2, j1, j2 in difflib.SequenceMatcher(None, a, b, autojunk=False).get_opcodes():
        if op == "equal":
            for n in range(i2 - i1):
                if after_change and n == 0:  # beside the change: as the new prompt has it (a space at least)
                    gap = b_gaps[j1] or a_gaps[i1]
                else:
                    gap = _gap(a_gaps[i1 + n], b_gaps[j1 + n])
                out.append(gap + b[j1 + n])
            after_change = False
            continue
        removed = "".join(g + w for g, w in zip(a_gaps[i1:i2], a[i1:i2]))
        added = "".join(g + w for g, w in zip(b_gaps[j1:j2], b[j1:j2]))
        lead = (b_gaps[j1] if j1 < j2 else a_gaps[i1]) if not after_change else ""
        out.append(lead)
        if removed:
            out.append(f"[-{removed[len(a_gaps[i1]):]}-]")
        if removed and added:
            out.append(" ")
        if added:
            out.append(f"{{+{added[len(b_gaps[j1]):]}+}}")
        after_change = True
    out.append(b_end if after_change else _gap(a_end, b_end))
    return "".join(out)
