"""Providers by type. Each satisfies `sparkspec.providers.base.Provider`."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path

from sparkspec.providers.base import Provider
from sparkspec.config.model import ProviderConfig

DEFAULT_BASE_URL = "https://api.sparkdance.ai"
BASE_URL_ENV = "SPARK_BASE_URL"


def _local(config: ProviderConfig, state_dir: Path, environ: Mapping[str, str]) -> Provider:
    from sparkspec.providers.local import LocalProvider

    return LocalProvider(state_dir / "local")


def _spark(config: ProviderConfig, state_dir: Path, environ: Mapping[str, str]) -> Provider:
    from sparkspec.providers.spark import SparkGateway, api_key_from_env, enable_debug_log

    key = api_key_from_env(config.api_key_env, environ)
    enable_debug_log(environ)
    base_url = config.base_url or environ.get(BASE_URL_ENV) or DEFAULT_BASE_URL
    return SparkGateway(base_url=base_url, api_key=key, model=config.model, protocol=config.protocol)


def _ark(config: ProviderConfig, state_dir: Path, environ: Mapping[str, str]) -> Provider:
    from sparkspec.providers.ark import ArkProvider, base_url
    from sparkspec.providers.spark import api_key_from_env, enable_debug_log

    key = api_key_from_env(config.api_key_env, environ)
    enable_debug_log(environ)
    return ArkProvider(base_url=base_url(config.base_url, environ), api_key=key, model=config.model)


PROVIDERS: dict[str, Callable[[ProviderConfig, Path, Mapping[str, str]], Provider]] = {
    "local": _local,
    "spark": _spark,
    "ark": _ark,
}


def make_provider(config: ProviderConfig, state_dir: Path,
                  environ: Mapping[str, str] = os.environ) -> Provider:
    return PROVIDERS[config.type](config, state_dir, environ)
