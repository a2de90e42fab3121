"""The API's error answers, in its own words, and what they mean for an apply.

The gateway's clients show the message in several places (reference section 7):
`{"status": {"code", "message", "error_code"}}`, `{"error": {"code", "message"}}`,
or a plain `message` / `error` string. Whichever it is, the user sees the API's
words. 401 is the key; 403 is "insufficient balance or permission denied"; 402,
codes 40201-40208, upstream's `AccountOverdueError` and messages about
insufficient credits or balance mean the account is out of money. Those stop
all new submissions (running tasks are still collected).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import httpx

from sparkspec.errors import AccountError, AuthError, ProviderError, RequestRejected

BILLING_CODES = frozenset(str(code) for code in range(40201, 40209)) | {"AccountOverdueError"}
BILLING_WORDS = re.compile(r"insufficient[ _-]*(credit|balance|fund)|out of credit|overdue", re.IGNORECASE)
MAX_WORDS = 500


def json_object(response: httpx.Response) -> dict[str, Any] | None:
    """The body as a JSON object; None when it is not one."""
    try:
        raw = response.json()
    except ValueError:
        return None
    return raw if isinstance(raw, dict) else None


def api_words(response: httpx.Response) -> tuple[str, str | None]:
    """The API's message and its error code, wherever the body nests them."""
    try:
        body = response.json()
    except ValueError:
        body = None
    message, code = words_of(body)
    if message is None:
        try:
            text = response.text.strip()
        except httpx.ResponseNotRead:
            text = ""
        message = text[:MAX_WORDS] if text and not text.startswith(("{", "[", "<")) else None
    return (message or response.reason_phrase or "no message"), code


def words_of(body: Any) -> tuple[str | None, str | None]:
    """(message, code) of an error body of any of the known shapes."""
    if not isinstance(body, dict):
        return (body[:MAX_WORDS] if isinstance(body, str) and body else None), None
    message: str | None = None
    code: str | None = None
    for name in ("status", "error"):
        inner = body.get(name)
        if isinstance(inner, dict):
            message = message or _text(inner.get("message") or inner.get("error_message") or inner.get("msg"))
            code = code or _text(inner.get("error_code")) or _text(inner.get("code"))
    for name in ("message", "error", "error_message", "detail", "msg"):
        message = message or _text(body.get(name))
    code = code or _text(body.get("error_code")) or _text(body.get("code"))
    return (message[:MAX_WORDS] if message else None), code


def is_billing(status: int, message: str, code: str | None) -> bool:
    return status == 402 or (code is not None and code in BILLING_CODES) or bool(BILLING_WORDS.search(message))


def refusal(response: httpx.Response, what: str, scrub: Callable[[str], str],
            key_env: str) -> ProviderError | None:
    """The error that stops all new submissions, when the answer is one; else None."""
    status = response.status_code
    message, code = api_words(response)
    message = scrub(message)
    said = f"HTTP {status}{f', code {code}' if code else ''}: {message}"
    if status == 401:
        return key_refused(what, said, key_env)
    if status < 500 and is_billing(status, message, code):
        return out_of_money(what, said)
    if status == 403:
        return not_permitted(what, said)
    return None


def key_refused(what: str, said: str, key_env: str) -> AuthError:
    return AuthError(f"{what}: the API refused the key ({said}). Check the key in {key_env}, "
                     f"or render offline with --provider local.")


def out_of_money(what: str, said: str) -> AccountError:
    return AccountError(f"{what}: the account is out of credits ({said}). Top up the account's balance, "
                        f"then run apply again; no new tasks are submitted until then.")


def not_permitted(what: str, said: str) -> AccountError:
    return AccountError(f"{what}: insufficient balance or permission denied ({said}). Check the "
                        f"account's balance and that the key may use this model, then run apply again; "
                        f"no new tasks are submitted until then.")


def rejected(response: httpx.Response, what: str, scrub: Callable[[str], str]) -> RequestRejected:
    message, code = api_words(response)
    said = f"HTTP {response.status_code}{f', code {code}' if code else ''}: {scrub(message)}"
    return RequestRejected(f"{what}: the API refused the request ({said})", status=response.status_code)


def _text(value: Any) -> str | None:
    if isinstance(value, bool) or value is None or value == "":
        return None
    if isinstance(value, (str, int, float)):
        return str(value)
    return None
