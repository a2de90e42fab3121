"""An AWS profile from the shared files (~/.aws/credentials, ~/.aws/config), for s3:// remotes.

obstore reads keys from the environment, instance roles and web identity by itself, but not
the shared files that `aws configure` writes. This reads them the way the AWS CLI and boto3
do, for the keys, region and endpoint_url of one profile:

- the profile: `AWS_PROFILE` (or the older `AWS_DEFAULT_PROFILE`), else `default`; a profile
  named in the environment must exist, the default one may be absent;
- the files: `AWS_SHARED_CREDENTIALS_FILE` and `AWS_CONFIG_FILE`, else `~/.aws/credentials`
  and `~/.aws/config` under `HOME`; sections `[name]` in the first, `[profile name]` (or
  `[default]`) in the second; a value in the credentials file wins;
- precedence (store.open_store, settings.resolve_remote): keys in the environment over the
  profile's; the region of the spec, then AWS_REGION / AWS_DEFAULT_REGION, then the profile;
  the endpoint of AWS_ENDPOINT_URL_S3 / AWS_ENDPOINT_URL, then the spec, then the profile.

Profiles that get their keys elsewhere (role_arn, credential_process, sso_*, web identity)
are not followed: that is one line saying how to export keys instead. The values read are
secrets: never part of the settings, redacted from every message.
"""

from __future__ import annotations

import configparser
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from sparkspec.errors import RemoteError

_INDIRECT = ("role_arn", "credential_process", "web_identity_token_file")  # and every sso_*


@dataclass(frozen=True)
class AwsProfile:
    name: str
    access_key_id: str | None = field(default=None, repr=False)
    secret_access_key: str | None = field(default=None, repr=False)
    session_token: str | None = field(default=None, repr=False)
    region: str | None = None
    endpoint_url: str | None = None

    @property
    def secrets(self) -> tuple[str, ...]:
        return tuple(v for v in (self.access_key_id, self.secret_access_key, self.session_token) if v)


def _files(environ: Mapping[str, str]) -> tuple[Path, Path]:
    home = Path(environ.get("HOME") or Path.home())

    def named(env: str, default: str) -> Path:
        given = environ.get(env, "").strip()
        return Path(os.path.expanduser(given)) if given else home / ".aws" / default

    return named("AWS_SHARED_CREDENTIALS_FILE", "credentials"), named("AWS_CONFIG_FILE", "config")


def _section(path: Path, names: tuple[str, ...]) -> dict[str, str] | None:
    parser = configparser.RawConfigParser(default_section="\0none")
    try:
        with path.open(encoding="utf-8") as stream:
            parser.read_file(stream)
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError, configparser.Error) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise RemoteError(f"{path}: cannot read this AWS file ({first}); fix it or point "
                          "AWS_SHARED_CREDENTIALS_FILE / AWS_CONFIG_FILE elsewhere") from None
    for name in names:
        if parser.has_section(name):
            return {k.lower(): v.strip() for k, v in parser.items(name) if v.strip()}
    return None


def read_profile(environ: Mapping[str, str]) -> AwsProfile | None:
    """The profile in force, or None (no profile named and no default one). Raises RemoteError
    for a profile named but absent, an unreadable file, or keys this cannot follow."""
    chosen = environ.get("AWS_PROFILE", "").strip() or environ.get("AWS_DEFAULT_PROFILE", "").strip()
    name = chosen or "default"
    credentials, config = _files(environ)
    from_credentials = _section(credentials, (name,))
    from_config = _section(config, (f"profile {name}", name) if name != "default" else ("default", "profile default"))
    if from_credentials is None and from_config is None:
        if chosen:
            raise RemoteError(f"AWS_PROFILE={chosen!r}: no such profile in {credentials} or {config}")
        return None
    values = {**(from_config or {}), **(from_credentials or {})}
    indirect = [k for k in values if k in _INDIRECT or k.startswith("sso_")]
    if indirect and not values.get("aws_access_key_id"):
        raise RemoteError(f"AWS profile {name!r} gets its keys through {indirect[0]}, which sparkspec does not "
                          f"follow; export keys instead: eval \"$(aws configure export-credentials --profile {name} "
                          "--format env)\"")
    if bool(values.get("aws_access_key_id")) != bool(values.get("aws_secret_access_key")):
        raise RemoteError(f"AWS profile {name!r} has only one of aws_access_key_id and aws_secret_access_key "
                          f"({credentials}, {config}); give both")
    return AwsProfile(name, access_key_id=values.get("aws_access_key_id"),
                      secret_access_key=values.get("aws_secret_access_key"),
                      session_token=values.get("aws_session_token"), region=values.get("region"),
                      endpoint_url=values.get("endpoint_url"))
