"""ModelArk's text error codes, read as the same errors as the gateway's (reference section 8).

ModelArk answers `{"error": {"code", "message", "param", "type"}}` where the code names
the problem: the code decides, whatever HTTP status a proxy in front of it passed on.
`AuthenticationError` is the key; `AccountOverdueError` (and `OperationDenied.ServiceOverdue`)
the account out of money; `AccessDenied`, `ModelNotOpen` and `OperationDenied.ServiceNotOpen`
a key or account not allowed this model. Each stops all new submissions (running tasks are
still collected). A request ModelArk refuses for its content or its parameters
(`InvalidParameter*`, `MissingParameter*`, `*SensitiveContentDetected`) is refused again
if sent again: never retried. Any other code (`RateLimitExceeded.*`, `ServerOverloaded`,
`InternalServiceError`, ...) falls to the shared rules: its status and `x-should-retry`.
"""

from __future__ import annotations

from collections.abc import Callable

import httpx

from sparkspec.errors import ProviderError, RequestRejected
from sparkspec.providers.spark.answers import api_words, key_refused, not_permitted, out_of_money, refusal

AUTH = frozenset({"AuthenticationError"})
OVERDUE = frozenset({"AccountOverdueError", "OperationDenied.ServiceOverdue"})
NOT_PERMITTED = frozenset({"AccessDenied", "ModelNotOpen", "OperationDenied.ServiceNotOpen"})
REJECTED_PREFIXES = ("InvalidParameter", "MissingParameter")


def ark_refusal(response: httpx.Response, what: str, scrub: Callable[[str], str],
                key_env: str) -> ProviderError | None:
    """The error a ModelArk answer ends the call with, by its text code; else the shared reading."""
    message, code = api_words(response)
    said = f"HTTP {response.status_code}{f', code {code}' if code else ''}: {scrub(message)}"
    if code in AUTH:
        return key_refused(what, said, key_env)
    if code in OVERDUE:
        return out_of_money(what, said)
    if code in NOT_PERMITTED:
        return not_permitted(what, said)
    if code is not None and (code.startswith(REJECTED_PREFIXES) or code.endswith("SensitiveContentDetected")):
        return RequestRejected(f"{what}: the API refused the request ({said})", status=response.status_code)
    return refusal(response, what, scrub, key_env)
