"""`Remote`: one remote as a command run uses it (lookups, pulls, pushes, claims, the queue).

`open_remote` resolves the settings and opens the store without a request; everything that
talks to the store is a coroutine raising `RemoteError` with the store's own words. Keys
whose entry turned out to point at a missing or damaged blob are remembered in
`.sparkspec/remote-bad.json`, so they are reported once and then are plain misses.
"""

from __future__ import annotations

import asyncio
import json
import os
import threading
import uuid
from collections.abc import Callable, Collection, Mapping
from pathlib import Path
from typing import Any

from sparkspec.config.model import RemoteConfig
from sparkspec.errors import RemoteError
from sparkspec.fsutil import atomic_write_text
from sparkspec.jsontext import load_json
from sparkspec.remote import index, transfer
from sparkspec.remote.claims import Claim, Claims, new_claim
from sparkspec.remote.entries import decode_entry
from sparkspec.remote.layout import entry_path
from sparkspec.remote.probe import ProbeResult, probe_conditional_writes, remember, remembered
from sparkspec.remote.queue import PushQueue
from sparkspec.remote.settings import RemoteSettings, resolve_remote
from sparkspec.remote.inventory import present_blobs
from sparkspec.remote.store import ObjectInfo, Store, open_store
from sparkspec.state.cache import Cache, CachedRender

BAD_NAME = "remote-bad.json"


class Remote:
    def __init__(self, settings: RemoteSettings, store: Store, state_dir: Path) -> None:
        self.settings = settings
        self.store = store
        self.state_dir = state_dir
        self.owner = uuid.uuid4().hex  # this run, as a claim owner
        self.claims = Claims(store)
        self.queue = PushQueue(state_dir, settings.identity)
        self._probe: ProbeResult | None = None
        self._probing: tuple[asyncio.AbstractEventLoop, asyncio.Future[ProbeResult]] | None = None
        self._probe_failed: str | None = None  # the store's words when this run's probe failed
        self.unread: set[str] = set()  # hits a lookup took from the lock: entry listed, not read
        self._read: set[str] = set()  # keys whose entry this run read and decoded
        self._bad_lock = threading.Lock()  # pulls in several threads mark keys at once

    @classmethod
    def connect(cls, settings: RemoteSettings, state_dir: Path, environ: Mapping[str, str] = os.environ) -> Remote:
        """Opens the store; makes no request."""
        return cls(settings, open_store(settings, environ), state_dir)

    @property
    def writable(self) -> bool:
        return self.settings.writable

    @property
    def signer(self) -> str:
        return self.settings.signer

    @property
    def display(self) -> str:
        return self.settings.display

    # -- reading -------------------------------------------------------------------------
    async def lookup(self, keys: Collection[str], *, with_claims: bool = True,
                     known: Mapping[str, CachedRender] | None = None, skip_bad: bool = True,
                     check_blobs: bool = False) -> index.Lookup:
        """`known`: renders the lock records by key; a listed entry of one is not read.
        `skip_bad`: keys whose blobs failed here before are misses, not asked again.
        `check_blobs`: a hit whose blobs the store does not list at their sizes is a miss."""
        bad = await self.still_bad([k for k in keys]) if skip_bad else set()
        wanted = [k for k in keys if k not in bad]
        if not wanted:
            return index.Lookup()
        await transfer.check_format(self.store)
        found = await index.lookup(self.store, wanted, self.settings.signing_key, self.signer,
                                   with_claims=with_claims, owner=self.owner, known=known,
                                   check_blobs=check_blobs)
        self.unread.update(found.unread)
        self._read.update(k for k in found.hits if k not in found.unread)
        return found

    async def pull(self, render: CachedRender, cache: Cache, tmp_dir: Path, *, record: bool = True) -> CachedRender:
        """Into the local cache, verified: the render pulled. A BlobProblem of a render read
        from its entry marks the key bad before it is raised. A render taken from the lock
        (`unread`: a lookup listed its entry without reading it, or `pull` by the lock's
        digests) whose blobs are not there is checked against its entry: none, or another
        machine's render of the key won the write-once entry (then that render is pulled)."""
        from_lock = render.key in self.unread or render.key not in self._read
        try:
            await transfer.pull_render(self.store, render, cache, tmp_dir, record=record)
            return render
        except transfer.BlobProblem as problem:
            if not from_lock:
                await self.mark_bad_render(render, str(problem))
                raise
            entry = await self.read_entry(render.key)
            if entry is None:
                raise transfer.BlobProblem(f"remote {self.display} has no render of key {render.key[:12]} (neither "
                                           "its entry nor its blobs); a machine that has it can push it") from None
            if transfer.same_blobs(entry, render):
                await self.mark_bad_render(render, str(problem))
                raise
        self.unread.discard(render.key)
        try:
            await transfer.pull_render(self.store, entry, cache, tmp_dir, record=record)
        except transfer.BlobProblem as exc:
            await self.mark_bad_render(entry, str(exc))
            raise
        return entry

    async def read_entry(self, key: str) -> CachedRender | None:
        """This signer's entry of `key`, decoded and (with a signing key) checked; else None."""
        render = await self._entry(key)
        return render if isinstance(render, CachedRender) else None

    async def _entry(self, key: str) -> CachedRender | str | None:
        """This signer's entry of `key`, decoded and checked; why it cannot be used (a str);
        None when there is none."""
        await transfer.check_format(self.store)  # another layout's entries are not ours to read
        got = await self.store.get(entry_path(key, self.signer))
        if got is None:
            return None
        render = decode_entry(got[0], key, self.settings.signing_key)
        if isinstance(render, CachedRender):
            self._read.add(key)
        return render

    async def fetch_sheet(self, digest: str) -> bytes | None:
        """The contact sheet `digest` names, as a teammate pushed it (checked); else None."""
        from sparkspec.remote.sheets import fetch_sheet

        await transfer.check_format(self.store)
        return await fetch_sheet(self.store, digest, self.settings.signing_key, self.signer)

    # -- writing -------------------------------------------------------------------------
    async def push_sheet(self, digest: str, png: bytes) -> bool:
        """Upload the contact sheet `digest` names unless the remote has it: True if written."""
        from sparkspec.remote.sheets import push_sheet

        if not self.writable:
            raise RemoteError(f"remote {self.display} is read-only here; nothing is pushed")
        await transfer.ensure_format(self.store)
        return await push_sheet(self.store, digest, png, self.settings.signing_key, self.signer)

    async def push(self, render: CachedRender, cache: Cache) -> bool:
        """Blobs, HEAD check, entry. True if this push created the entry."""
        if not self.writable:
            raise RemoteError(f"remote {self.display} is read-only here; nothing is pushed")
        created = await transfer.push_render(self.store, render, cache, self.settings.signing_key, self.signer)
        await asyncio.to_thread(self.queue.remove, render.key)
        return created

    async def mend(self, render: CachedRender, cache: Cache) -> tuple[str, int | str]:
        """The remote has an entry of `render.key` already (this machine's render is in its
        cache). When the entry names this very render, its blobs that are gone, listed at
        another size, or found damaged here (`bad_keys`) go up again: blobs are named by their
        sha256 and read back checked, so only the bytes the entry promises can land.
        ("repaired", bytes sent) or ("sound", 0). An entry naming another render whose blobs
        are gone or damaged is ("broken", what to do): entries are write-once, so `remote gc`
        removes it once past its grace period; so is one this machine cannot read or trust (cut
        short, a signature that does not match). A sound entry of another render (a teammate's
        render of the key, or the one this machine's `--replace` re-rolled) is ("other", bytes
        sent): this render's files go up all the same, unnamed by any entry, so a lock that
        names this render (committed after the --replace) is pulled by its files' digests.
        ("unreadable", "") for an entry gone since it was listed."""
        entry = await self._entry(render.key)
        if entry is None:
            return "unreadable", ""  # gone since it was found (a gc): the next push writes it
        if isinstance(entry, str):  # at this machine's own path: damaged, or not a sparkspec entry
            return "broken", (f"the team's remote has an entry of this key that cannot be used ({entry}); entries "
                              "are write-once, so `sparkspec remote gc` removes it once past its grace period "
                              "(`sparkspec remote verify` lists it), then `sparkspec push` uploads this machine's render")
        bad = await asyncio.to_thread(self.bad_keys)
        gone = await transfer.absent_blobs(self.store, entry)
        if not transfer.same_blobs(entry, render):
            if gone or render.key in bad:
                why = f"blob {gone[0][:12]} is missing" if gone else bad[render.key]
                return "broken", (f"the team's remote has another render of this key, and {why}; "
                                  "`sparkspec remote gc` removes that broken entry once past its grace period, "
                                  "then `sparkspec push` uploads this machine's render")
            return "other", await transfer.upload_blobs(self.store, render, cache)
        if render.key in bad:  # found damaged here: a listing cannot tell, so both go up again
            gone = [render.video_sha256, render.last_frame_sha256]
        if not gone:
            return "sound", 0
        sent = await transfer.upload_blobs(self.store, render, cache, gone)
        await asyncio.to_thread(self.forget_bad, [render.key])
        return "repaired", sent

    # -- claims --------------------------------------------------------------------------
    def new_claim(self, key: str) -> Claim:
        return new_claim(key, self.settings.claim_ttl, self.owner)

    async def claims_work(self) -> ProbeResult:
        """Whether claims can be trusted on this store: probed once per machine and remote.
        Read-only: never probed, and no claims are made (the answer is False)."""
        if not self.writable:
            return ProbeResult(False, "read-only")
        if self._probe is None:
            if self._probe_failed is not None:  # once a run: not a probe (and its retries) per scene
                raise RemoteError(self._probe_failed)
            loop = asyncio.get_running_loop()
            if self._probing is None or self._probing[0] is not loop:  # scenes starting at once share one
                self._probing = (loop, asyncio.ensure_future(self._run_probe()))
            try:
                self._probe = await asyncio.shield(self._probing[1])
            except RemoteError as exc:
                self._probe_failed = str(exc)
                raise
        return self._probe

    async def _run_probe(self) -> ProbeResult:
        found = await asyncio.to_thread(remembered, self.state_dir, self.settings.identity)
        if found is None:
            found = await probe_conditional_writes(self.store)
            await asyncio.to_thread(remember, self.state_dir, self.settings.identity, found)
        return found

    # -- keys whose entry is broken ------------------------------------------------------
    def _bad_marks(self) -> dict[str, Any]:
        try:
            raw = load_json((self.state_dir / BAD_NAME).read_text(encoding="utf-8"))
            found = raw.get(self.settings.identity, {})
        except (OSError, ValueError, AttributeError):
            return {}
        return found if isinstance(found, dict) else {}

    def bad_keys(self) -> dict[str, str]:
        """Key -> why its blobs failed here. A mark is the reason, or {"reason", "blobs"} with
        what the store said of each blob then (`mark_bad_render`)."""
        return {str(k): str(v.get("reason", "")) if isinstance(v, dict) else str(v)
                for k, v in self._bad_marks().items()}

    async def still_bad(self, keys: Collection[str]) -> set[str]:
        """Of `keys`, those marked bad whose blobs the store still holds as they were when
        marked. A blob written again since (a push mended it) ends the mark: the key is
        looked up as any other."""
        marks = self._bad_marks()
        marked = {k: marks[k] for k in keys if k in marks}
        if not marked:
            return set()
        seen = {k: m["blobs"] for k, m in marked.items() if isinstance(m, dict) and isinstance(m.get("blobs"), dict)}
        now = await present_blobs(self.store, {sha for blobs in seen.values() for sha in blobs}) if seen else {}
        mended = [k for k, blobs in seen.items() if any(_fingerprint(now.get(sha)) != was for sha, was in blobs.items())]
        if mended:
            await asyncio.to_thread(self.forget_bad, mended)
        return set(marked) - set(mended)

    async def mark_bad_render(self, render: CachedRender, reason: str) -> None:
        """Mark `render`'s key bad with its blobs as the store holds them now: a later lookup
        asks again once one of them is written anew."""
        shas = [render.video_sha256, render.last_frame_sha256]
        try:
            now = await present_blobs(self.store, shas)
        except RemoteError:
            now = None  # the store is not answering: a plain mark, ended by a push from here or gc
        blobs = {sha: _fingerprint(now.get(sha)) for sha in shas} if now is not None else None
        await asyncio.to_thread(self.mark_bad, render.key, reason, blobs)

    def mark_bad(self, key: str, reason: str, blobs: Mapping[str, str | None] | None = None) -> None:
        mark: Any = reason if blobs is None else {"reason": reason, "blobs": dict(blobs)}
        self._edit_bad(lambda found: found.__setitem__(key, mark))

    def forget_bad(self, keys: Collection[str]) -> None:
        """Their broken entries are gone (remote gc): a new entry of the key is a hit again."""
        if keys:
            self._edit_bad(lambda found: [found.pop(k, None) for k in keys])

    def _edit_bad(self, edit: Callable[[dict[str, str]], object]) -> None:
        with self._bad_lock:
            self._edit_bad_locked(edit)

    def _edit_bad_locked(self, edit: Callable[[dict[str, str]], object]) -> None:
        path = self.state_dir / BAD_NAME
        try:
            memo = load_json(path.read_text(encoding="utf-8"))
            memo = memo if isinstance(memo, dict) else {}
        except (OSError, ValueError):
            memo = {}
        found = memo.get(self.settings.identity)
        if not isinstance(found, dict):
            found = memo[self.settings.identity] = {}
        edit(found)
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, json.dumps(memo, sort_keys=True, indent=2) + "\n")


def _fingerprint(info: ObjectInfo | None) -> str | None:
    """What tells a blob written again from the one seen before (None: there was none)."""
    if info is None:
        return None
    return f"{info.size}:{info.etag or ''}:{info.modified.isoformat() if info.modified else ''}"


def open_remote(spec: RemoteConfig | None, state_dir: Path, environ: Mapping[str, str] = os.environ, *,
                remote: str | None = None, mode: str | None = None) -> Remote | None:
    """The remote in force for this run, or None; makes no request. Raises RemoteError for a
    bad setting (a URL that is not one, an unknown mode)."""
    settings = resolve_remote(spec, environ, remote=remote, mode=mode)
    return None if settings is None else Remote.connect(settings, state_dir, environ)
