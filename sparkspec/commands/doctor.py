"""`sparkspec doctor`: is the provider reachable and the key accepted, and does the team's
remote answer? Never pays for anything, and writes nothing.

Checks, in order: the key's variable is set; the base URL's host resolves and the
API answers; the key is accepted, by reading a task id that cannot exist (404:
the key works; 401/403: it does not). Then it prints what an apply would use. With a
remote in force (the spec's `remote:` or SPARKSPEC_REMOTE), it reads the remote's
format.json: the store answers, the credentials may read, and the layout is one this
sparkspec reads (or nothing was pushed yet).
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import httpx

from sparkspec.config.model import ProviderConfig, RemoteConfig
from sparkspec.errors import AccountError, AuthError, ProviderError, TaskNotFound

if TYPE_CHECKING:
    from sparkspec.config.loader import LoadOptions


@dataclass
class Report:
    lines: list[str] = field(default_factory=list)
    ok: bool = True

    def check(self, passed: bool, text: str) -> bool:
        self.lines.append(f"{'ok  ' if passed else 'FAIL'} {text}")
        self.ok = self.ok and passed
        return passed


def doctor_config(spec: Path, options: LoadOptions, display: str,
                  given: bool = False) -> tuple[ProviderConfig, RemoteConfig | None]:
    """The spec's provider and remote, read once (with the --var and --var-file its templates
    may need); with no spec yet, the defaults of the provider type asked for and no remote (the
    environment may still name one). A spec named with -f (`given`) must be there, and so must
    the project's when run from a folder inside it: checking the defaults instead would check
    what it does not use."""
    from sparkspec.config.loader import load_project, project_above, require_spec

    if given or project_above(spec) is not None:
        require_spec(spec, display)
    if not spec.exists():
        return default_config(options.provider or "spark"), None
    project = load_project(spec, options, display).project
    return project.provider, project.remote


def default_config(kind: str) -> ProviderConfig:
    """What the loader gives a spec whose provider is just `type: KIND`: each type its own
    model, key variable and parallelism (ark: ARK_API_KEY and ModelArk's model id)."""
    from sparkspec import apifacts

    config = ProviderConfig()
    if kind == "local":
        from sparkspec.config.loader import local_parallelism

        return replace(config, type="local", parallelism=local_parallelism())
    if kind == "ark":
        return replace(config, type="ark", model=apifacts.ARK_MODEL, api_key_env="ARK_API_KEY")
    return config


def diagnose(config: ProviderConfig, environ: Mapping[str, str] = os.environ,
             transport: httpx.AsyncBaseTransport | None = None,
             resolve: Callable[[str, int], object] = socket.getaddrinfo) -> Report:
    """What `doctor` prints, and whether every check passed."""
    from sparkspec.providers import base_url

    report = Report()
    url = base_url(config, environ)
    report.lines += [f"provider     {config.type}", f"dialect      {_dialect(config)}",
                     f"base URL     {url if config.type != 'local' else '(none: renders on this machine)'}",
                     f"parallelism  {config.parallelism}"]
    if config.type != "local":  # a limit of the API's: nothing to do with renders on this machine
        report.lines.append(f"requests     {config.requests_per_minute} per minute")
    if config.type == "local":
        report.check(True, "the local provider needs no key and no network")
        return report
    key = environ.get(config.api_key_env, "").strip()
    if not report.check(bool(key), f"{config.api_key_env} is {'set' if key else 'not set: export it with your API key'}"):
        return report
    host = urlsplit(url).hostname or ""
    try:
        resolve(host, urlsplit(url).port or 443)
    except (OSError, UnicodeError) as exc:
        report.check(False, f"{host} does not resolve ({exc}); check provider.base_url or {_base_env(config)}")
        return report
    report.check(True, f"{host} resolves")
    asyncio.run(_key_accepted(report, config, url, key, transport))
    return report


async def _key_accepted(report: Report, config: ProviderConfig, url: str, key: str,
                        transport: httpx.AsyncBaseTransport | None) -> None:
    from sparkspec.providers.ark import ArkProvider
    from sparkspec.providers.ratelimit import RateLimiter
    from sparkspec.providers.spark import SparkGateway, SparkProvider

    options: dict[str, Any] = dict(transport=transport, timeout=15.0, max_retries=1, max_wait=5.0,
                                   limiter=RateLimiter(config.requests_per_minute), key_env=config.api_key_env)
    # Each dialect reads the impossible task where it reads tasks: ModelArk's path, or the
    # queue protocol's status URL (a locator naming only the model), or the generation one.
    def made(with_key: str) -> SparkProvider:
        return ArkProvider(url, with_key, config.model, **options) if config.type == "ark" else \
            SparkGateway(url, with_key, config.model, protocol=config.protocol, **options)

    provider = made(key)
    locator = json.dumps({"model": config.model}) if config.type == "spark" and config.protocol == "queue" else None
    impossible = f"sparkspec-doctor-{uuid.uuid4().hex}"
    try:
        await provider.poll(impossible, locator)
    except TaskNotFound:
        # A 404 proves the key only where a wrong key is refused: a path that is no API (a wrong
        # base URL) answers 404 to any key.
        if await _refuses_a_wrong_key(made("sparkspec-doctor-not-a-key"), impossible, locator):
            report.check(True, f"the API answers at {url}")
            report.check(True, f"the key in {config.api_key_env} is accepted")
        else:
            report.check(False, f"{url} answers 404 whatever the key, so it is not the API's base URL (ModelArk's "
                                "ends in /api/v3); set base_url (or its variable) to the API's")
    except (AuthError, AccountError) as exc:
        report.check(True, f"the API answers at {url}")
        report.check(False, str(exc))
    except ProviderError as exc:
        report.check(False, f"the API did not answer as expected: {exc}")
    else:
        report.check(False, f"the API answered a task that cannot exist ({impossible}) with a task; "
                            f"is {url} the right base URL?")
    finally:
        await provider.aclose()


async def _refuses_a_wrong_key(provider: Any, task: str, locator: str | None) -> bool:
    try:
        await provider.poll(task, locator)
    except (AuthError, AccountError):
        return True
    except (TaskNotFound, ProviderError):
        return False
    finally:
        await provider.aclose()
    return False


def diagnose_remote(report: Report, remote: RemoteConfig | None, state_dir: Path,
                    environ: Mapping[str, str] = os.environ) -> None:
    """The remote lines of `doctor`: which remote, its mode, and whether it answers a read."""
    from sparkspec.errors import RemoteError
    from sparkspec.remote.session import open_remote
    from sparkspec.remote.transfer import check_format

    try:
        session = open_remote(remote, state_dir, environ)
    except RemoteError as exc:
        report.check(False, str(exc))
        return
    if session is None:
        report.lines.append("remote       none (renders are shared through no remote)")
        return
    report.lines.append(f"remote       {session.display} ({session.settings.mode})")

    async def read() -> bool:
        await check_format(session.store)
        return session.store.format_known

    try:
        pushed = asyncio.run(read())
    except RemoteError as exc:
        report.check(False, str(exc))
        return
    report.check(True, "the remote answers" + ("" if pushed else "; nothing pushed to it yet"))


def _base_env(config: ProviderConfig) -> str:
    from sparkspec.providers import BASE_URL_ENV
    from sparkspec.providers.ark import BASE_URL_ENV as ARK_BASE_URL_ENV

    return ARK_BASE_URL_ENV if config.type == "ark" else BASE_URL_ENV


def _dialect(config: ProviderConfig) -> str:
    protocol = config.protocol
    return {"local": "none", "spark": f"gateway, {protocol} protocol",
            "ark": "upstream (ModelArk)"}.get(config.type, config.type)
