"""The three ways the model is served, as the tests meet them: the gateway's generation and
queue protocols (`type: spark`) and upstream's own API (`type: ark`), all on the fake.

    @every_dialect()            # the test runs against each of the three
    @every_dialect(slow=True)   # ... the queue and ark copies only in the slow run
    def test_x(dialect: Dialect, fake_api: FakeSparkAPI) -> None: ...

A test that takes the `dialect` fixture without parametrizing it gets the generation
protocol (see conftest).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

import pytest

from fakeapi import ARK_MODEL, MODEL, FakeSparkAPI


@dataclass(frozen=True)
class Dialect:
    name: str  # generation | queue | ark
    provider: str  # the provider type: spark | ark
    protocol: str | None  # spark's protocol
    key_env: str
    base_env: str
    model: str

    def __str__(self) -> str:
        return self.name

    def base_url(self, api: FakeSparkAPI) -> str:
        return api.ark_base_url if self.provider == "ark" else api.base_url

    def env(self, api: FakeSparkAPI) -> dict[str, str]:
        return {self.key_env: api.api_key, self.base_env: self.base_url(api)}

    def spec_provider(self, indent: str = "  ") -> str:
        """The spec's provider block lines (type and protocol) for this dialect."""
        lines = [f"type: {self.provider}"] + ([f"protocol: {self.protocol}"] if self.protocol else [])
        return "".join(f"{indent}{line}\n" for line in lines)

    def inline(self) -> str:
        """The same, as flow-mapping entries: `type: spark, protocol: queue`."""
        return f"type: {self.provider}" + (f", protocol: {self.protocol}" if self.protocol else "")

    def params(self, body: dict[str, Any]) -> dict[str, Any]:
        """The generation parameters of a create body, whatever its envelope."""
        if self.name == "generation":
            return dict(body["input"][0]["params"])
        if self.name == "queue":
            return dict(body)
        return {k: v for k, v in body.items() if k != "model"}

    def make(self, api: FakeSparkAPI, key: str | None = None, **options: Any) -> Any:
        """The provider object on the fake (tests pass sleep, rng, timeouts...)."""
        options.setdefault("rng", random.Random(0))
        if self.provider == "ark":
            from sparkspec.providers.ark import ArkProvider

            return ArkProvider(options.pop("base_url", None) or api.ark_base_url, key or api.api_key, self.model,
                               **options)
        from sparkspec.providers.spark import SparkGateway

        return SparkGateway(options.pop("base_url", None) or api.base_url, key or api.api_key, self.model,
                            protocol=self.protocol or "generation", **options)


GENERATION = Dialect("generation", "spark", None, "SPARK_API_KEY", "SPARK_BASE_URL", MODEL)
QUEUE = Dialect("queue", "spark", "queue", "SPARK_API_KEY", "SPARK_BASE_URL", MODEL)
ARK = Dialect("ark", "ark", None, "ARK_API_KEY", "ARK_BASE_URL", ARK_MODEL)
DIALECTS = (GENERATION, QUEUE, ARK)


def every_dialect(slow: bool = False, only: tuple[Dialect, ...] = DIALECTS) -> pytest.MarkDecorator:
    """Parametrize `dialect` over the dialects; with slow=True the copies beyond the generation
    protocol go to the slow run, so the default suite stays fast."""
    params = [pytest.param(d, id=d.name, marks=[pytest.mark.slow] if slow and d is not GENERATION else [])
              for d in only]
    return pytest.mark.parametrize("dialect", params)
