"""The cache index's diskcache.Cache, opened in one transaction.

diskcache's `Cache.__init__` writes each of its twenty settings back to its Settings table on
every open, in statements of their own, and creates its tables and triggers the same way: each
statement is a commit, and each commit writes the Settings page again (with a rollback journal,
twice: the journal's copy and the page). Opening an index that already exists wrote about 220 KB:
2 KB a scene of a 100-scene apply, more than all its lock writes. Here those statements run in
one transaction, begun at the first statement that writes (after diskcache has set its pragmas:
SQLite refuses to change the journal mode inside a transaction) and committed before diskcache
closes the connection it opened them on: one commit of a page or two.

This leans on three names inside diskcache 5.6 (`_sql_retry`, `close`, `_local`); pyproject.toml
keeps diskcache below 6, and tests/state/test_cacheindex.py checks the bytes and the result.
"""

from __future__ import annotations

import io
import os
import pickle
import sqlite3
from collections.abc import Callable
from typing import Any

import diskcache


class ForeignEntry(pickle.UnpicklingError):
    """An index value that names a class or a function: not one sparkspec wrote (its entries
    are plain dicts of strings and numbers)."""


class _PlainUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        # Unpickling runs what a value names: a cache folder someone else can write (a shared
        # one) must not be a way to run code here, and a class this sparkspec lacks is not an
        # internal error either.
        raise ForeignEntry(f"a value naming {module}.{name}, not a plain entry")


class PlainDisk(diskcache.Disk):  # type: ignore[misc]
    """diskcache's Disk, with values decoded as plain data only (dicts, lists, strings,
    numbers): ForeignEntry for one that names anything else."""

    def fetch(self, mode: int, filename: str | None, value: Any, read: bool) -> Any:
        if mode != diskcache.core.MODE_PICKLE:
            return super().fetch(mode, filename, value, read)
        if value is None:
            with open(os.path.join(self._directory, filename or ""), "rb") as reader:
                return _PlainUnpickler(reader).load()
        return _PlainUnpickler(io.BytesIO(value)).load()


class Index(diskcache.Cache):  # type: ignore[misc]  # diskcache has no type hints
    def __init__(self, directory: str, **settings: Any) -> None:
        self._opening = True
        settings.setdefault("disk", PlainDisk)
        try:
            super().__init__(directory, **settings)
        except BaseException:
            self._end_opening("ROLLBACK")
            raise
        finally:
            self._opening = False

    @property
    def _sql_retry(self) -> Callable[..., sqlite3.Cursor]:
        # What __init__ runs its statements with (pragmas go another way): the first one that
        # writes begins the transaction.
        execute: Callable[..., sqlite3.Cursor] = super()._sql_retry
        if not getattr(self, "_opening", False):
            return execute

        def run(statement: str, *args: Any, **kwargs: Any) -> sqlite3.Cursor:
            if self._opening and not statement.startswith(("SELECT", "BEGIN")) and \
                    not self._con.in_transaction:
                execute("BEGIN IMMEDIATE")
            return execute(statement, *args, **kwargs)
        return run

    def close(self) -> None:
        # __init__ ends by closing the connection it opened (and opening one with the timeout
        # asked for): what it wrote is committed first, not rolled back by the close.
        if getattr(self, "_opening", False):
            self._end_opening("COMMIT")
        super().close()

    def _end_opening(self, statement: str) -> None:
        con: sqlite3.Connection | None = getattr(self._local, "con", None)
        if con is not None and con.in_transaction:
            self._opening = False
            con.execute(statement)
