"""Where things live under `<prefix>/v1/`, and the checks every name read back from a remote gets.

    format.json                         {"layout": 1}: the layout version
    blobs/sha256/<aa>/<sha256>          a video or last frame
    renders/<aa>/<key>.<signer>.json    a render's cache entry, write-once: the commit point
    claims/<aa>/<key>.json              who renders <key> now
    sheets/<aa>/<digest>.<signer>.png   a contact sheet, named by what it shows (review/sheetid.py)
    roots/<project>/<digest>.json       the keys a pushed lock refers to (remote gc keeps them)
    probe/<random>                      the conditional-write probe, removed afterwards

A remote is written by other machines, so nothing read from it is trusted as a name: digests,
keys and signers must be lower-case hex of the right length, project names a plain slug.
"""

from __future__ import annotations

import re

from sparkspec.errors import RemoteError

LAYOUT_VERSION = 1
ROOT = "v1"  # the folder under the remote's prefix every path below is relative to
FORMAT = "format.json"
BLOBS, RENDERS, CLAIMS, ROOTS, PROBES, SHEETS = "blobs/sha256", "renders", "claims", "roots", "probe", "sheets"
UNSIGNED = "unsigned"

_HEX64 = re.compile(r"[0-9a-f]{64}")
_SIGNER = re.compile(r"[0-9a-f]{16}|unsigned")
_PROJECT = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
_ENTRY_NAME = re.compile(r"(?P<key>[0-9a-f]{64})\.(?P<signer>[0-9a-f]{16}|unsigned)\.json")


def is_digest(value: object) -> bool:
    """A sha256 hex digest (also the form of a scene key)."""
    return isinstance(value, str) and _HEX64.fullmatch(value) is not None


def _digest(value: str, what: str) -> str:
    if not is_digest(value):
        raise RemoteError(f"not a sha256 {what}: {value[:80]!r}")
    return value


def blob_path(sha256: str) -> str:
    sha256 = _digest(sha256, "digest")
    return f"{BLOBS}/{sha256[:2]}/{sha256}"


def _signed_path(folder: str, digest: str, what: str, signer: str, suffix: str) -> str:
    """`<folder>/<aa>/<digest>.<signer><suffix>`: the name of a signer's object about a digest."""
    digest = _digest(digest, what)
    if not _SIGNER.fullmatch(signer):
        raise RemoteError(f"not a signer: {signer!r}")
    return f"{folder}/{digest[:2]}/{digest}.{signer}{suffix}"


def entry_path(key: str, signer: str) -> str:
    return _signed_path(RENDERS, key, "key", signer, ".json")


def entry_prefix(shard: str) -> str:
    """The listing prefix of the entries whose keys start with `shard` (two hex digits)."""
    if not re.fullmatch(r"[0-9a-f]{2}", shard):
        raise RemoteError(f"not a shard: {shard!r}")
    return f"{RENDERS}/{shard}/"


def parse_entry_path(path: str) -> tuple[str, str] | None:
    """(key, signer) of an entry path found in a listing, or None for anything else."""
    head, _, name = path.rpartition("/")
    match = _ENTRY_NAME.fullmatch(name)
    if match is None or head.rsplit("/", 1)[-1] != match["key"][:2]:
        return None
    return match["key"], match["signer"]


def sheet_path(digest: str, signer: str) -> str:
    return _signed_path(SHEETS, digest, "sheet digest", signer, ".png")


_SHEET_NAME = re.compile(r"(?P<digest>[0-9a-f]{64})\.(?P<signer>[0-9a-f]{16}|unsigned)\.png")


def parse_sheet_path(path: str) -> str | None:
    """The digest of a sheet path found in a listing, or None for anything else."""
    head, _, name = path.rpartition("/")
    match = _SHEET_NAME.fullmatch(name)
    if match is None or head != f"{SHEETS}/{match['digest'][:2]}":
        return None
    return match["digest"]


def claim_path(key: str) -> str:
    key = _digest(key, "key")
    return f"{CLAIMS}/{key[:2]}/{key}.json"


def parse_claim_path(path: str) -> str | None:
    head, _, name = path.rpartition("/")
    key = name[:-5] if name.endswith(".json") else ""
    return key if is_digest(key) and head.rsplit("/", 1)[-1] == key[:2] else None


def root_path(project: str, digest: str) -> str:
    if not _PROJECT.fullmatch(project) or project in (".", ".."):
        raise RemoteError(f"not a project name for the remote: {project!r}")
    return f"{ROOTS}/{project}/{_digest(digest, 'digest')}.json"


def project_slug(name: str) -> str:
    """A project's name as a roots/ folder: what `root_path` accepts."""
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-.")[:128]
    return slug or "project"
