"""A word-level diff of two prompts, in git's --word-diff=plain notation."""

from __future__ import annotations

import difflib
import re

_TOKENS = re.compile(r"\S+|\s+")
_VISIBLE = str.maketrans({" ": "·", "\t": "→", "\n": "↵"})


def word_diff(old: str, new: str) -> str:
    """`Coffee [-pours-] {+drips+} from the machine`."""
    a, b = _TOKENS.findall(old), _TOKENS.findall(new)
    out: list[str] = []
    for op, i1, i2, j1, j2 in difflib.SequenceMatcher(None, a, b, autojunk=False).get_opcodes():
        removed, added = "".join(a[i1:i2]), "".join(b[j1:j2])
        if op == "equal":
            out.append(removed)
            continue
        if not removed.strip() and not added.strip():
            # Only whitespace changed, and the key with it: shown (a space as ·, a tab as →, a
            # line break as ↵), not printed as the new spacing with nothing marked.
            out.append((f"[-{removed.translate(_VISIBLE)}-]" if removed else "")
                       + (f"{{+{added.translate(_VISIBLE)}+}}" if added else ""))
            continue
        changed = added or removed
        out.append(changed[: len(changed) - len(changed.lstrip())])
        if removed.strip():
            out.append(f"[-{removed.strip()}-]")
        if removed.strip() and added.strip():
            out.append(" ")
        if added.strip():
            out.append(f"{{+{added.strip()}+}}")
        out.append(changed[len(changed.rstrip()):])
    return "".join(out)
