"""The hosted Spark Dance API as a provider.

`provider` holds the HTTP clients, their retries (and why a create is retried
only when no task can exist) and the downloads; `wire` builds the create body
and reads task objects of both dialects; `apikey` reads the key and keeps it
out of the debug log; `queue` adds the gateway's queue protocol (`SparkGateway`, the
provider `type: spark` builds).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sparkspec.providers.spark.apikey import api_key_from_env, enable_debug_log
    from sparkspec.providers.spark.provider import SparkProvider
    from sparkspec.providers.spark.queue import SparkGateway
    from sparkspec.providers.spark.wire import CreateBody, create_params, parse_task

# Imported when first asked for: a fetch worker process imports `filehost` alone, and the
# gateway's modules (asyncio among them) would delay its first job (PEP 562).
_EXPORTS = {"api_key_from_env": "apikey", "enable_debug_log": "apikey", "SparkProvider": "provider",
            "SparkGateway": "queue", "CreateBody": "wire", "create_params": "wire", "parse_task": "wire"}


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)


__all__ = ["CreateBody", "SparkGateway", "SparkProvider", "api_key_from_env", "create_params", "enable_debug_log", "parse_task"]
