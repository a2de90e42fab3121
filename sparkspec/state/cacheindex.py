"""The cache index's diskcache.Cache, opened in one transaction.

diskcache's `Cache.__init__` writes each of its twenty settings back to its Settings table on
every open, in statements of their own, and creates its tables and triggers the same way: each
statement is a commit, and each commit appends the Settings page to SQLite's write-ahead log.
Opening an index that already exists wrote about 220 KB (107 KB through the log, then again into
the database): 2 KB a scene of a 100-scene apply, more than all its lock writes. Here those
statements run in one transaction, begun after diskcache has set its pragmas (SQLite refuses to
change the journal mode inside one) and committed before diskcache closes the connection it
opened them on: one commit of a page or two.

This leans on three names inside diskcache 5.6 (`reset`, `close`, `_local`); pyproject.toml
keeps diskcache below 6, and tests/state/test_cacheindex.py checks the bytes and the result.
"""

from __future__ import annotations

import sqlite3
from typing import Any

import diskcache
from diskcache.core import ENOVAL


class Index(diskcache.Cache):  # type: ignore[misc]  # diskcache has no type hints
    def __init__(self, directory: str, **settings: Any) -> None:
        self._opening = True
        try:
            super().__init__(directory, **settings)
        except BaseException:
            self._end_opening("ROLLBACK")
            raise
        finally:
            self._opening = False

    def reset(self, key: str, value: Any = ENOVAL, update: bool = True) -> Any:
        # The first setting written back (after every pragma is set) begins the transaction.
        if getattr(self, "_opening", False) and update and value is not ENOVAL:
            con = self._con
            if not con.in_transaction:
                self._sql_retry("BEGIN IMMEDIATE")
        return super().reset(key, value, update)

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
