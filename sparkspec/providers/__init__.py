"""Providers by type. Each satisfies `sparkspec.providers.base.Provider`."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # a fetch worker imports this package for `base` alone
    from sparkspec.config.model import ProviderConfig
    from sparkspec.providers.base import Provider

DEFAULT_BASE_URL = "https://cloud.vtrix.ai"  # the operator's API host (reference section 5)
BASE_URL_ENV = "SPARK_BASE_URL"


def _local(config: ProviderConfig, state_dir: Path, environ: Mapping[str, str]) -> Provider:
    from sparkspec.providers.local import LocalProvider

    return LocalProvider(state_dir / "local", max_parallel=config.parallelism)


def _spark(config: ProviderConfig, state_dir: Path, environ: Mapping[str, str]) -> Provider:
    from sparkspec.providers.ratelimit import RateLimiter
    from sparkspec.providers.spark import SparkGateway, api_key_from_env, enable_debug_log

    key = api_key_from_env(config.api_key_env, environ)
    enable_debug_log(environ)
    return SparkGateway(base_url=base_url(config, environ), api_key=key, model=config.model,
                        protocol=config.protocol, limiter=RateLimiter(config.requests_per_minute),
                        key_env=config.api_key_env)


def _ark(config: ProviderConfig, state_dir: Path, environ: Mapping[str, str]) -> Provider:
    from sparkspec.providers.ark import ArkProvider
    from sparkspec.providers.ratelimit import RateLimiter
    from sparkspec.providers.spark import api_key_from_env, enable_debug_log

    key = api_key_from_env(config.api_key_env, environ)
    enable_debug_log(environ)
    return ArkProvider(base_url=base_url(config, environ), api_key=key, model=config.model,
                       limiter=RateLimiter(config.requests_per_minute), key_env=config.api_key_env)


def base_url(config: ProviderConfig, environ: Mapping[str, str] = os.environ) -> str:
    """The spec's provider.base_url, else the type's variable (SPARK_BASE_URL, ARK_BASE_URL),
    else its default (the operator's API host for spark)."""
    if config.type == "ark":
        from sparkspec.providers.ark import base_url as ark_base_url

        return ark_base_url(config.base_url, environ)
    return config.base_url or environ.get(BASE_URL_ENV) or DEFAULT_BASE_URL


PROVIDERS: dict[str, Callable[[ProviderConfig, Path, Mapping[str, str]], Provider]] = {
    "local": _local,
    "spark": _spark,
    "ark": _ark,
}


def make_provider(config: ProviderConfig, state_dir: Path,
                  environ: Mapping[str, str] = os.environ) -> Provider:
    return PROVIDERS[config.type](config, state_dir, environ)
