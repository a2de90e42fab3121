"""JSON read back from the disk or a store, where anything may have been written."""

from __future__ import annotations

import json
from typing import Any


def load_json(text: str | bytes) -> Any:
    """`json.loads`, where nesting too deep for Python's parser (a RecursionError, which a
    thousand `[` make) is malformed JSON like any other: a ValueError (JSONDecodeError)."""
    try:
        return json.loads(text)
    except RecursionError:
        raise json.JSONDecodeError("nested too deeply", text if isinstance(text, str) else "", 0) from None
