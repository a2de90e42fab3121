"""File digests remembered by (size, ctime_ns, inode), so unchanged files are not read again.

The inode's change time, not the modification time: a write sets both, but `touch -r` or a
tool that keeps timestamps can put the mtime back, while nothing but the kernel sets the
ctime. A file edited so was vouched for, and `delete` removed a user's edit as sparkspec's.

Used for first-frame images and for the outputs in renders/, whose bytes plan
must vouch for on every run. The memo lives in the project's .sparkspec/.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from sparkspec.fsutil import atomic_write_text, read_regular, sha256_file
from sparkspec.jsontext import load_json

MEMO_NAME = "digests.json"


class DigestMemo:
    def __init__(self, state_dir: Path, root: Path) -> None:
        self.path = state_dir / MEMO_NAME
        self.root = root
        root_text = str(root)
        # "<root>/": a prefix that names a path's place in the memo without pathlib, where
        # paths are spelled with "/" (elsewhere `_name` takes pathlib's way).
        self._prefix = root_text + "/" if os.sep == "/" and not root_text.endswith("/") else None
        self.dirty = False
        self._entries: dict[str, list[int | str]] | None = None

    @property
    def entries(self) -> dict[str, list[int | str]]:
        if self._entries is None:
            try:
                loaded = load_json(read_regular(self.path).decode("utf-8"))
            except (OSError, ValueError):
                loaded = None
            # A damaged memo (cut short, hand-edited, from another version) is rebuilt: entries
            # that are not [size, mtime_ns, inode, sha256] are dropped and hashed again.
            self._entries = {name: entry for name, entry in loaded.items() if _valid(entry)} \
                if isinstance(loaded, dict) else {}
            self.dirty = loaded is not None and self._entries != loaded
        return self._entries

    def _name(self, path: Path) -> str:
        text = str(path)
        if self._prefix is not None and text.startswith(self._prefix):
            return text[len(self._prefix):]  # what relative_to gives: str(path) is normalised
        try:
            return str(path.relative_to(self.root))
        except ValueError:
            return text

    def sha256(self, path: Path) -> str | None:
        """The file's sha256, or None when it does not exist."""
        return self._digest(path, self._name(path))

    def sha256_under(self, root: Path, relative: str) -> str | None:
        """`sha256(root / relative)`; without building a Path when `relative` is plain."""
        if self._prefix is None or (root is not self.root and root != self.root) or not _plain(relative):
            return self.sha256(root / relative)
        return self._digest(self._prefix + relative, relative)

    def _digest(self, path: Path | str, name: str) -> str | None:
        try:
            st = os.stat(path)
        except (FileNotFoundError, NotADirectoryError):
            return None
        stamp: list[int | str] = [st.st_size, st.st_ctime_ns, st.st_ino]
        entry = self.entries.get(name)
        if entry is not None and entry[:3] == stamp:
            return str(entry[3])
        digest = sha256_file(Path(path))
        self.entries[name] = stamp + [digest]
        self.dirty = True
        return digest

    def remember(self, path: Path, digest: str) -> None:
        """Record a digest the caller just computed while writing the file."""
        st = os.stat(path)
        self.entries[self._name(path)] = [st.st_size, st.st_ctime_ns, st.st_ino, digest]
        self.dirty = True

    def save(self) -> None:
        if self.dirty and self._entries is not None:
            try:
                atomic_write_text(self.path, json.dumps(self._entries, sort_keys=True, separators=(",", ":")))
            except OSError:
                return  # a read-only checkout or a full disk: the digests are computed again next time
            self.dirty = False


def _plain(relative: str) -> bool:
    """A relative path that pathlib spells as written: no leading "/", no empty or "." parts."""
    return all(part not in ("", ".") for part in relative.split("/"))


def _valid(entry: object) -> bool:
    return (isinstance(entry, list) and len(entry) == 4 and all(type(v) is int for v in entry[:3])
            and isinstance(entry[3], str) and len(entry[3]) == 64)
