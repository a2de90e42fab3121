"""Upstream's own API for the model, `provider.type: ark`: ByteDance ModelArk (BytePlus
ModelArk, Volcengine Ark), reference section 8. Its own base URL, model id and key."""

from __future__ import annotations

import os
from collections.abc import Mapping

from sparkspec.providers.ark.provider import ArkProvider

DEFAULT_BASE_URL = "https://ark.ap-southeast.bytepluses.com/api/v3"  # BytePlus; Volcengine: ark.cn-beijing.volces.com
BASE_URL_ENV = "ARK_BASE_URL"

__all__ = ["ArkProvider", "DEFAULT_BASE_URL", "base_url"]


def base_url(configured: str | None, environ: Mapping[str, str] = os.environ) -> str:
    """The spec's provider.base_url, else ARK_BASE_URL, else BytePlus ModelArk's."""
    return configured or environ.get(BASE_URL_ENV) or DEFAULT_BASE_URL
