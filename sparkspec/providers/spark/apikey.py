"""The API key, read from the environment, and the debug log, which must never show it.

The key goes only into the `Authorization` header of API calls. The debug log
(SPARKSPEC_DEBUG=1) shows every request with that header redacted, every answer
of the API with its body (task objects, errors), the key and the query strings
of URLs (their signatures) removed, so its output can be pasted into a bug report.
"""

from __future__ import annotations

import logging
import os
import re
import sys
from collections.abc import Mapping

import httpx

from sparkspec.errors import AuthError

log = logging.getLogger("sparkspec.providers.spark")

DEBUG_ENV = "SPARKSPEC_DEBUG"
MAX_LOGGED_BODY = 8000
SIGNED = re.compile(r"(https?://[^\s\"'?]+)\?[^\s\"']*")


def api_key_from_env(var: str, environ: Mapping[str, str] = os.environ) -> str:
    """The key from the variable `var`; a clear error, before any work, when it is unusable."""
    key = environ.get(var, "").strip()
    if not key:
        raise AuthError(f"no API key: the environment variable {var} is not set. Export {var} with "
                        f"your API key, or render offline with --provider local.")
    if not key.isascii() or not key.isprintable() or " " in key:
        raise AuthError(f"the API key in {var} contains spaces or characters a header cannot carry; "
                        f"set it again, or render offline with --provider local.")
    return key


def enable_debug_log(environ: Mapping[str, str] = os.environ) -> None:
    """With SPARKSPEC_DEBUG=1, every API call is logged to stderr (the key redacted)."""
    if environ.get(DEBUG_ENV, "") not in ("", "0") and not log.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("sparkspec debug: %(message)s"))
        log.addHandler(handler)
        log.setLevel(logging.DEBUG)


def redacted_headers(headers: httpx.Headers) -> dict[str, str]:
    return {name: ("<redacted>" if name.lower() in ("authorization", "cookie") else value)
            for name, value in headers.items()}


def note_request(request: httpx.Request) -> None:
    if log.isEnabledFor(logging.DEBUG):
        log.debug("-> %s %s %s", request.method, _short_url(request.url), redacted_headers(request.headers))


def note_response(response: httpx.Response) -> None:
    if log.isEnabledFor(logging.DEBUG):
        log.debug("<- %s %s HTTP %d", response.request.method, _short_url(response.request.url),
                  response.status_code)


async def log_request(request: httpx.Request) -> None:  # the same, as an async client's hook
    note_request(request)


async def log_response(response: httpx.Response) -> None:
    note_response(response)


def log_body(what: str, response: httpx.Response, secret: str) -> None:
    """The API's answer in full, for finding where a field is on the first real apply."""
    if log.isEnabledFor(logging.DEBUG):
        log.debug("%s: HTTP %d %s", what, response.status_code, redact(response.text, secret)[:MAX_LOGGED_BODY])


def redact(text: str, secret: str) -> str:
    """`text` without the key and without any URL's query string (where signatures live)."""
    return SIGNED.sub(r"\1?<signed>", scrub(text, secret))


SHORT_SECRET = 8  # characters: a key shorter than this is redacted only where it stands alone


def scrub(text: str, secret: str) -> str:
    """`text` with the key replaced by <redacted>. A key of a few characters (a test's "k") is
    replaced only where it stands alone: everywhere, it took letters out of the API's words
    ("the tas<redacted> expired")."""
    if not secret:
        return text
    if len(secret) >= SHORT_SECRET:
        return text.replace(secret, "<redacted>")
    return re.sub(rf"(?<![A-Za-z0-9_-]){re.escape(secret)}(?![A-Za-z0-9_-])", "<redacted>", text)


def _short_url(url: httpx.URL) -> str:
    """Signed URLs carry their signature in the query: keep it out of the log."""
    return str(url.copy_with(query=None)) + ("?<signed>" if url.query else "")

