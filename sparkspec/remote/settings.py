"""Which remote this machine uses, and how: the spec's `remote:`, then the environment, then the CLI.

Precedence (DESIGN section 9): `SPARKSPEC_REMOTE` over `remote.url`; `AWS_ENDPOINT_URL_S3`
(or `AWS_ENDPOINT_URL`) over `remote.endpoint`; `SPARKSPEC_REMOTE_CLAIM_TTL` over
`remote.claim_ttl`; `--remote off` / `--remote-mode MODE` over `SPARKSPEC_REMOTE_MODE`.
Then, for s3://, an AWS profile's endpoint_url (`awsprofile`). Credentials are never part of
the settings: the store reads them from the environment (AWS_ACCESS_KEY_ID, ...) or the AWS
profile (AWS_PROFILE, ~/.aws/), and `secrets()` lists their values so any message that echoes
one can be redacted.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal, cast

from sparkspec.config.model import RemoteConfig
from sparkspec.errors import RemoteError

Mode = Literal["read-write", "read-only", "off"]
MODES: tuple[Mode, ...] = ("read-write", "read-only", "off")
DEFAULT_CLAIM_TTL = 120.0
MAX_CLAIM_TTL = 3600.0  # seconds: the longest claim_ttl (a holder renews every ttl/4); a waiter believes no more
# Seconds a request that is not a file transfer (a lookup, an entry, a claim) may take, retries
# included: a store that accepts connections and never answers fails in that time.
DEFAULT_TIMEOUT = 10.0

REMOTE_ENV = "SPARKSPEC_REMOTE"
MODE_ENV = "SPARKSPEC_REMOTE_MODE"
TTL_ENV = "SPARKSPEC_REMOTE_CLAIM_TTL"
TIMEOUT_ENV = "SPARKSPEC_REMOTE_TIMEOUT"
SIGNING_KEY_ENV = "SPARKSPEC_REMOTE_SIGNING_KEY"
ENDPOINT_ENVS = ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL")
SCHEMES = ("s3", "gs", "az", "file", "memory")
_URL = re.compile(r"^(?P<scheme>[a-z0-9]+)://(?P<rest>.*)$")

# Names whose values are secrets in the storage's standard credential chains.
_SECRET_ENVS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN",
                "AZURE_STORAGE_ACCOUNT_KEY", "AZURE_STORAGE_SAS_KEY", "AZURE_CLIENT_SECRET",
                "GOOGLE_SERVICE_ACCOUNT_KEY", SIGNING_KEY_ENV)

# Keys that look like credentials: a validation error in the spec, which lives in git.
CREDENTIAL_WORDS = ("key", "secret", "token", "password", "credential", "sas", "signature")


def credential_like(name: str) -> bool:
    lowered = name.lower()
    return any(word in lowered for word in CREDENTIAL_WORDS)


_USERINFO = re.compile(r"(?P<scheme>\b[a-zA-Z][a-zA-Z0-9+.-]*://)[^/\s@?#]*@")
IN_THE_ENVIRONMENT = "set them in the environment (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_PROFILE, ...)"


def url_credentials(url: str) -> bool:
    """Whether a remote URL or endpoint carries a credential: `user:secret@` or a query
    parameter such as `X-Amz-Signature` or `sig` (a pre-signed URL)."""
    if _USERINFO.match(url.strip()):
        return True
    query = url.partition("?")[2].partition("#")[0]
    return any(credential_like(part.partition("=")[0]) or part.partition("=")[0].lower() in ("sig", "se", "sv")
               for part in query.split("&") if part)


@dataclass(frozen=True)
class RemoteSettings:
    """A resolved remote. `url` has no trailing slash; `mode` is never "off" (that is None)."""

    url: str
    mode: Mode = "read-write"
    endpoint: str | None = None
    region: str | None = None
    claim_ttl: float = DEFAULT_CLAIM_TTL
    signing_key: bytes | None = field(default=None, repr=False)
    timeout: float = DEFAULT_TIMEOUT  # seconds for a request that is not a file transfer

    @property
    def scheme(self) -> str:
        return self.url.split("://", 1)[0]

    @property
    def writable(self) -> bool:
        return self.mode == "read-write"

    @property
    def signer(self) -> str:
        """The `<signer>` part of entry names: whose entries this machine writes and reads."""
        if self.signing_key is None:
            return "unsigned"
        return hashlib.sha256(self.signing_key).hexdigest()[:16]

    @property
    def identity(self) -> str:
        """Names the remote in .sparkspec/ (probe memo, queue) without its credentials."""
        return hashlib.sha256(f"{self.url}\n{self.endpoint or ''}".encode()).hexdigest()[:16]

    @property
    def display(self) -> str:
        return self.url if self.endpoint is None else f"{self.url} (endpoint {self.endpoint})"


def resolve_remote(spec: RemoteConfig | None, environ: Mapping[str, str] = os.environ, *,
                   remote: str | None = None, mode: str | None = None) -> RemoteSettings | None:
    """The remote this run uses, or None (none configured, or switched off).

    `remote` and `mode` are the CLI's `--remote` (only "off") and `--remote-mode`."""
    if remote == "off":
        return None
    chosen = mode or environ.get(MODE_ENV, "").strip() or "read-write"
    if chosen not in MODES:
        source = "--remote-mode" if mode else MODE_ENV
        raise RemoteError(f"{source}={chosen!r}: use one of {', '.join(MODES)}")
    if chosen == "off":
        return None
    url = environ.get(REMOTE_ENV, "").strip() or (spec.url if spec else None)
    if not url:
        return None
    url = _check_url(url, REMOTE_ENV if environ.get(REMOTE_ENV, "").strip() else "remote.url")
    endpoint = _endpoint(spec, environ) if url.startswith("s3://") else None  # an S3 endpoint, for S3 only
    if endpoint is None and url.startswith("s3://"):
        from sparkspec.remote.awsprofile import read_profile

        profile = read_profile(environ)
        endpoint = profile.endpoint_url if profile else None
    ttl = _seconds(environ, TTL_ENV, spec.claim_ttl if spec and spec.claim_ttl else DEFAULT_CLAIM_TTL,
                   "the claim lifetime", MAX_CLAIM_TTL)
    timeout = _seconds(environ, TIMEOUT_ENV, DEFAULT_TIMEOUT, "how long a request to the remote may take")
    key = environ.get(SIGNING_KEY_ENV, "")
    return RemoteSettings(url=url, mode=cast(Mode, chosen), endpoint=endpoint,
                          region=spec.region if spec else None,
                          claim_ttl=ttl, signing_key=key.encode() if key else None, timeout=timeout)


def _seconds(environ: Mapping[str, str], name: str, default: float, what: str, most: float = float("inf")) -> float:
    text = environ.get(name, "").strip()
    if not text:
        return default
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 < value <= most:
        raise RemoteError(f"{name}={text!r}: give {what} in seconds, above 0" +
                          (f" and at most {most:g}" if most < float("inf") else ""))
    return value


def _endpoint(spec: RemoteConfig | None, environ: Mapping[str, str]) -> str | None:
    named = next((n for n in ENDPOINT_ENVS if environ.get(n, "").strip()), None)
    endpoint = environ[named].strip() if named else (spec.endpoint if spec else None)
    if endpoint is not None and url_credentials(endpoint):
        raise RemoteError(f"{named or 'remote.endpoint'}: credentials never go in the endpoint; {IN_THE_ENVIRONMENT}")
    return endpoint


def not_a_remote_url(url: str) -> str:
    return (f"{url!r} is not a remote URL; use s3://bucket/prefix, gs://bucket/prefix, "
            "az://container/prefix or file:///path/to/folder")


def url_problem(url: str) -> str | None:
    """What is wrong with a remote's URL (credentials aside), or None."""
    match = _URL.match(url)
    if match is None or match["scheme"] not in SCHEMES or not match["rest"].strip("/"):
        return not_a_remote_url(url)
    if match["scheme"] == "file" and match["rest"].split("/", 1)[0] not in ("", "localhost"):
        return f"{url!r}: a file:// remote names a local folder (file:///path)"
    if match["scheme"] != "file" and not match["rest"].split("/", 1)[0]:
        # s3:///prefix: no bucket, so every listing went to the store's list of buckets and
        # read as an empty remote
        return f"{url!r} names no bucket; use {match['scheme']}://bucket/prefix"
    return None


def _check_url(url: str, source: str) -> str:
    if url_credentials(url):
        raise RemoteError(f"{source}: credentials never go in the remote's URL; {IN_THE_ENVIRONMENT}")
    problem = url_problem(url)
    if problem is not None:
        raise RemoteError(f"{source}: {problem}")
    return url.rstrip("/")


def secrets(environ: Mapping[str, str] = os.environ) -> tuple[str, ...]:
    """Credential values in force, longest first, for redacting messages."""
    values = {environ.get(name, "").strip() for name in _SECRET_ENVS}
    return tuple(sorted((v for v in values if len(v) >= 4), key=len, reverse=True))


def redact(text: str, environ: Mapping[str, str] = os.environ, also: tuple[str, ...] = ()) -> str:
    """`text` without the credential values in force (and `also`, e.g. a profile's keys), nor
    the `user:secret@` of any URL in it."""
    text = _USERINFO.sub(r"\g<scheme><redacted>@", text)
    for value in sorted({*secrets(environ), *(v for v in also if len(v) >= 4)}, key=len, reverse=True):
        text = text.replace(value, "<redacted>")
    return text
