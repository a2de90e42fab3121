"""One remote as a small typed object store over obstore, rooted at `<prefix>/v1/`.

Every method is a coroutine, takes a path relative to `v1/` (see `layout`) and answers in
plain values: a missing object is None, a lost conditional write is None, anything else the
store refuses is a `RemoteError` carrying the store's own words (first line, credentials
redacted). A read-only store refuses every write before it reaches the network.

Backends: `s3://` (AWS or any S3-compatible store; `endpoint` for others, `http://` allowed
as given), `gs://`, `az://` (obstore's own configuration from the environment),
`file:///path` (a shared folder) and `memory://name` (in-process, for tests). obstore's local
folder cannot update an object conditionally, so `update` there takes an flock beside the
object, compares the ETag and replaces the file.

Every call goes through obstore's blocking API on threads of our own (`_blocking`), never its
async API: that one completes each Python future from a tokio thread, and a tokio thread
still inside `call_soon_threadsafe` when the interpreter finalizes is torn down mid-Rust and
aborts the whole process (SIGABRT after a plan's last GET had already answered). A blocking
call returns on a Python thread, and the interpreter joins those before it finalizes.
"""

from __future__ import annotations

import asyncio
import fcntl
import functools
import hashlib
import os
import re
import threading
from collections.abc import AsyncIterator, Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from sparkspec.errors import RemoteError
from sparkspec.remote.layout import ROOT
from sparkspec.remote.settings import RemoteSettings, redact

CHUNK = 1 << 20
# Bounded so that an unreachable store costs seconds, not the default minutes. File transfers
# (a video up or down) may take long on a slow link; every other request is small and gets
# `RemoteSettings.timeout` in all, retries included (`_control`): a store that accepts
# connections and never answers fails a lookup, a pull or a push in that time.
CLIENT_OPTIONS = {"connect_timeout": "3s", "timeout": "120s"}
RETRY = {"max_retries": 3, "retry_timeout": timedelta(seconds=10),
         "backoff": {"init_backoff": timedelta(milliseconds=100), "max_backoff": timedelta(seconds=2),
                     "base": 2}}


def _control(options: dict[str, Any], timeout: float) -> tuple[dict[str, Any], dict[str, Any]]:
    """Client options and retry config of the small requests' client: `timeout` seconds per
    attempt and for the retries together (the connect phase keeps its own, shorter bound)."""
    bound = timedelta(seconds=timeout)
    connect = min(timedelta(seconds=3), bound)
    return {**options, "timeout": bound, "connect_timeout": connect}, {**RETRY, "retry_timeout": bound}
_MEMORY: dict[str, Any] = {}  # memory://name -> one MemoryStore per process
THREADS = 32  # requests in flight at once; pulls and pushes bound themselves below this
THREAD_NAME = "sparkspec-store"
_pool: ThreadPoolExecutor | None = None
_running = 0  # calls on the store's threads not yet returned
_running_lock = threading.Lock()
# glibc's mallopt parameters
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD, M_ARENA_MAX = -1, -3, -8
MMAP_THRESHOLD = 64 << 20
TRIM_THRESHOLD = 512 << 20


def _tune_malloc() -> None:
    """Suit glibc's malloc to downloads' 1 MB chunks, allocated on one store thread and freed
    on another. Two arenas: uncapped, each thread that allocates under contention gets an
    arena of its own (up to 8 a core) and keeps what is freed there, and a pull of 100 x 4 MB
    grew to 140 MB (110 MB capped). Chunks from the heap, not mmap: glibc maps a chunk this
    size afresh and unmaps it when freed, and each fresh page faults and is zeroed (and each
    unmap interrupts every thread): in a pull of 100 x 4 MB from a store on loopback the
    process spent 0.55-0.8 s in the kernel, against 0.35-0.45 s with the freed chunks kept
    for the next (1.0-1.25 s wall against 0.95-1.0, peak RSS 76 -> 80 MB). Not glibc:
    nothing to do."""
    import ctypes

    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return
    mallopt(M_ARENA_MAX, 2)
    mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)
    mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD)


async def _blocking(call: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """`call(*args, **kwargs)` (an obstore blocking call) on the store's threads."""
    global _pool, _running
    if _pool is None:
        _tune_malloc()
        _pool = ThreadPoolExecutor(THREADS, thread_name_prefix=THREAD_NAME)
    with _running_lock:
        _running += 1
    try:
        done = asyncio.get_running_loop().run_in_executor(_pool, _counted, functools.partial(call, *args, **kwargs))
    except BaseException:
        _returned()
        raise
    return await done


def _counted(call: Callable[[], Any]) -> Any:
    try:
        return call()
    finally:
        _returned()


def _returned() -> None:
    global _running
    with _running_lock:
        _running -= 1


def is_store_thread(thread: threading.Thread) -> bool:
    return thread.name.startswith(THREAD_NAME)


def calls_running() -> int:
    """Store calls still blocked in a thread. At exit these are calls nobody waits for any more
    (a plan's remote budget ran out, Ctrl-C): the process must not wait out their timeouts."""
    with _running_lock:
        return _running


TIMED_OUT = "no answer from the store in time (timed out)"


class StoreTimeout(RemoteError):
    """The store did not answer within the request's bound (retries included)."""


@dataclass(frozen=True)
class ObjectInfo:
    path: str  # relative to v1/
    size: int
    etag: str | None
    modified: datetime | None


class Store:
    def __init__(self, backend: Any, display: str, *, writable: bool = True,
                 local_root: Path | None = None, environ: Mapping[str, str] = os.environ,
                 hidden: tuple[str, ...] = (), bulk: Any = None) -> None:
        self.backend = backend  # small requests (`_control`'s bounds)
        self.bulk = bulk  # file transfers, with a longer bound; None: `backend` does both
        self.display = display
        self.writable = writable
        self.local_root = local_root  # the v1/ folder of a file:// remote
        self.environ = environ
        self.hidden = hidden  # credentials from elsewhere than the environment (an AWS profile)
        self.format_known = False  # format.json read (a layout we know) or written by us
        # Whether this store's ETag of a plain upload is the body's MD5 (S3's, and most
        # gateways'): None until an upload's ETag looked like one (transfer.check_upload).
        self.md5_etags: bool | None = None
        self.format_refused: str | None = None  # why its format.json is not one we read: asked once
        # Why the store is not asked again in this run (it did not answer the plan): every
        # call fails at once with it, instead of waiting out its own timeout.
        self.silent: str | None = None

    # -- errors ----------------------------------------------------------------------------
    def failure(self, exc: BaseException, doing: str) -> RemoteError:
        words = store_words(exc)
        kind = StoreTimeout if words == TIMED_OUT else RemoteError
        return kind(redact(f"remote {self.display}: {doing}: {words}", self.environ, self.hidden))

    def _check_writable(self, path: str) -> Any:
        """The backend to write with; a local folder is made on the first write, never before."""
        if not self.writable:
            raise RemoteError(f"remote {self.display} is read-only here; not writing {path}")
        if self.silent is not None:
            raise RemoteError(self.silent)
        if self.backend is None and self.local_root is not None:
            from obstore.store import LocalStore

            try:
                self.local_root.mkdir(parents=True, exist_ok=True)
                self.backend = LocalStore(self.local_root)
            except Exception as exc:
                raise self.failure(exc, f"create {self.local_root}") from None
        return self.backend

    def _reader(self) -> Any:
        """The backend to read with, or None: a local folder that does not exist yet is empty."""
        if self.silent is not None:
            raise RemoteError(self.silent)
        if self.backend is None and self.local_root is not None:
            if not self.local_root.is_dir():
                # Not made yet: empty. Unless a file stands where its folder would be.
                there = next((p for p in (self.local_root, *self.local_root.parents) if p.exists()), None)
                if there is not None and not there.is_dir():
                    raise RemoteError(f"remote {self.display}: {there} is a file, where the remote's folder "
                                      "would be; point the remote at a folder")
                return None
            from obstore.store import LocalStore

            self.backend = LocalStore(self.local_root)
        return self.backend

    # -- reads -----------------------------------------------------------------------------
    async def head(self, path: str) -> ObjectInfo | None:
        import obstore

        backend = self._reader()
        if backend is None:
            return None
        try:
            meta = await _blocking(obstore.head, backend, path)
        except FileNotFoundError:
            return None
        except Exception as exc:
            raise self.failure(exc, f"HEAD {path}") from None
        return _info(meta)

    async def get(self, path: str) -> tuple[bytes, ObjectInfo] | None:
        """A small object's bytes (entries, claims, format.json)."""
        import obstore

        backend = self._reader()
        if backend is None:
            return None
        try:
            result = await _blocking(obstore.get, backend, path)
            data = bytes(await _blocking(result.bytes))
        except FileNotFoundError:
            return None
        except Exception as exc:
            raise self.failure(exc, f"GET {path}") from None
        return data, _info(result.meta)

    async def download(self, path: str, dest: Path, *, durable: bool = False) -> tuple[int, str] | None:
        """Stream an object into `dest`: (bytes, sha256) of what arrived, None if absent.
        `durable`: `dest` is fsync'd before this returns (it is about to be installed).
        The whole transfer runs on one of the store's threads: the body is written and hashed
        as it arrives (both give the GIL back), and the event loop only hears the result."""
        got: tuple[int, str] | None = await _blocking(self.download_now, path, dest, durable=durable)
        return got

    def download_now(self, path: str, dest: Path, *, durable: bool = False) -> tuple[int, str] | None:
        """`download` on the calling thread: for work that `run` puts on the store's threads."""
        backend = self._reader()
        if backend is None:
            return None
        try:
            return _download(self.bulk or backend, path, dest, durable)
        except OSError as exc:
            if exc.__class__.__module__.startswith("obstore"):
                raise self.failure(exc, f"GET {path}") from None
            raise RemoteError(f"{dest}: cannot write a download from the remote: {exc.strerror}") from None
        except Exception as exc:
            raise self.failure(exc, f"GET {path}") from None

    async def run(self, call: Callable[..., Any], *args: Any) -> Any:
        """`call(*args)` on the store's threads: several blocking steps (`download_now` among
        them) in one hop from the event loop instead of one hop each."""
        return await _blocking(call, *args)

    async def list_pages(self, prefix: str) -> AsyncIterator[list[ObjectInfo]]:
        """The objects under `prefix`, a page (the store's listing page) at a time."""
        import obstore

        backend = self._reader()
        if backend is None:
            return
        try:
            pages = obstore.list(backend, prefix, chunk_size=1000)
            while (page := await _blocking(next, pages, None)) is not None:
                yield [_info(meta) for meta in page]
        except FileNotFoundError:
            return
        except Exception as exc:
            raise self.failure(exc, f"LIST {prefix}") from None

    async def list(self, prefix: str) -> list[ObjectInfo]:
        return [info async for page in self.list_pages(prefix) for info in page]

    # -- writes ----------------------------------------------------------------------------
    async def put(self, path: str, data: bytes) -> str | None:
        """Write unconditionally (content-addressed blobs); the ETag. On S3 the body carries
        its sha256 checksum, so the store refuses one damaged in transit."""
        backend = self._check_writable(path)
        import obstore

        try:
            result = await _blocking(obstore.put, self.bulk or backend, path, data, mode="overwrite",
                                     use_multipart=False)
        except Exception as exc:
            raise self.failure(exc, f"PUT {path}") from None
        etag: str | None = result["e_tag"]
        return etag

    async def create(self, path: str, data: bytes) -> str | None:
        """Write only if nothing is at `path` (If-None-Match: *): the ETag, or None if taken."""
        backend = self._check_writable(path)
        import obstore
        from obstore.exceptions import AlreadyExistsError, PreconditionError

        try:
            result = await _blocking(obstore.put, backend, path, data, mode="create")
        except (AlreadyExistsError, PreconditionError):
            return None
        except Exception as exc:
            raise self.failure(exc, f"PUT {path} (If-None-Match)") from None
        return result["e_tag"] or ""

    async def update(self, path: str, data: bytes, etag: str) -> str | None:
        """Replace `path` only if its ETag is still `etag` (If-Match): the new ETag, or None."""
        backend = self._check_writable(path)
        if self.local_root is not None:
            return await self._update_local(path, data, etag)
        import obstore
        from obstore.exceptions import AlreadyExistsError, PreconditionError

        try:
            result = await _blocking(obstore.put, backend, path, data, mode={"e_tag": etag})
        except (PreconditionError, AlreadyExistsError, FileNotFoundError):
            return None
        except Exception as exc:
            raise self.failure(exc, f"PUT {path} (If-Match)") from None
        return result["e_tag"] or ""

    async def _update_local(self, path: str, data: bytes, etag: str) -> str | None:
        # Blocking calls in a thread: an flock held across an await could deadlock this very loop.
        return await _blocking(self._update_local_sync, path, data, etag)  # type: ignore[no-any-return]

    def _update_local_sync(self, path: str, data: bytes, etag: str) -> str | None:
        import obstore

        assert self.local_root is not None
        # One lock file beside v1/ for every conditional update: they are rare (heartbeats,
        # takeovers) and short, and nothing appears in v1/'s listings.
        try:
            fd = os.open(self.local_root.parent / ".sparkspec-update.lock", os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise self.failure(exc, f"lock {path}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                current = obstore.head(self.backend, path)
            except FileNotFoundError:
                return None
            if current.get("e_tag") != etag:
                return None
            return obstore.put(self.backend, path, data, mode="overwrite")["e_tag"] or ""
        except Exception as exc:
            raise self.failure(exc, f"PUT {path} (If-Match)") from None
        finally:
            os.close(fd)  # closing drops the flock

    async def delete(self, path: str) -> None:
        backend = self._check_writable(path)
        import obstore

        try:
            await _blocking(obstore.delete, backend, path)
        except FileNotFoundError:
            return
        except Exception as exc:
            raise self.failure(exc, f"DELETE {path}") from None


def _download(backend: Any, path: str, dest: Path, durable: bool) -> tuple[int, str] | None:
    import obstore

    digest, size = hashlib.sha256(), 0
    try:
        result = obstore.get(backend, path)
    except FileNotFoundError:
        return None
    with dest.open("wb") as out:
        for chunk in result.stream(min_chunk_size=CHUNK):
            out.write(chunk)
            digest.update(chunk)
            size += len(chunk)
        out.flush()
        if durable:
            os.fsync(out.fileno())
        # Otherwise left to the kernel, no writeback started: the remote keeps a copy, and
        # what waits for the disk (the flush before a lock write that names new files) writes
        # it then. Started early, it allocated the blocks at once, and every fsync on the
        # filesystem meanwhile (the cache index's commit) waited for all of them: a clone
        # pulling 409 MB spent 0.3 s in that commit, and its pulls competed with the writes.
    return size, digest.hexdigest()


METADATA_HOSTS = ("169.254.169.254", "169.254.170.2", "[fd00:ec2::254]")  # EC2 / ECS credential services


def store_words(exc: BaseException) -> str:
    """What the store said, short: its HTTP status and S3 error code and message when it sent
    them (they sit at the end of obstore's long first line), else that first line. With no
    credentials given, obstore asks the instance's metadata service for some: its failure is
    not the store's answer, and says so."""
    text = str(exc).strip()
    first = text.splitlines()[0] if text else ""
    if any(f"//{host}" in first for host in METADATA_HOSTS):
        said = re.search(r"(status code: \d{3}[^:]*|error sending request|timed out)", first)
        return ("no AWS credentials: none in the environment (AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY) or "
                "an AWS profile, and the instance metadata service gave none"
                + (f" ({said[1].replace('status code: ', 'HTTP ')})" if said else ""))
    status = re.search(r"status code: (\d{3}[^:<]*)", text)
    code, message = re.search(r"<Code>([^<]+)</Code>", text), re.search(r"<Message>([^<]+)</Message>", text)
    if status or code:
        parts = [f"HTTP {status[1].strip()}" if status else "", code[1] if code else "", message[1] if message else ""]
        return ": ".join(p for p in parts if p)
    # No answer at all: obstore's first line says only "error sending request"; its debug
    # source says why.
    kind = re.search(r"HttpError \{\s*kind: (\w+)", text)
    if kind is not None and kind[1] == "Timeout":
        return TIMED_OUT
    if kind is not None and kind[1] == "Connect":
        reason = re.search(r'message: "([^"]+)"', text)
        return f"cannot connect to the store ({reason[1] if reason else 'connection failed'})"
    words = text.splitlines()[0] if text else type(exc).__name__
    return words if len(words) <= 300 else words[:300] + "..."


def _info(meta: Mapping[str, Any]) -> ObjectInfo:
    return ObjectInfo(path=str(meta["path"]), size=int(meta["size"]), etag=meta.get("e_tag"),
                      modified=meta.get("last_modified"))


def open_store(settings: RemoteSettings, environ: Mapping[str, str] = os.environ) -> Store:
    """The store `settings` name, rooted at `<prefix>/v1/`. Makes no request."""
    import obstore.store as stores

    url = settings.url
    parts = urlsplit(url)
    writable = settings.writable
    prefix = "/".join(p for p in (parts.path.strip("/"), ROOT) if p)
    options: dict[str, Any] = dict(CLIENT_OPTIONS)
    hidden: tuple[str, ...] = ()
    try:
        if parts.scheme == "file":
            if parts.netloc not in ("", "localhost"):
                raise RemoteError(f"{url}: a file:// remote names a local folder (file:///path)")
            # The folder's backend is made on first use (reading a folder not there yet finds
            # nothing; the first write creates it).
            return Store(None, settings.display, writable=writable, local_root=Path(unquote(parts.path)) / ROOT,
                         environ=environ)
        if parts.scheme == "memory":
            backend = _MEMORY.setdefault(parts.netloc + parts.path, stores.MemoryStore())
            return Store(backend, settings.display, writable=writable, environ=environ)
        if parts.scheme == "s3":
            config: dict[str, Any] = {"checksum_algorithm": "sha256"}
            if settings.endpoint:
                config["endpoint"] = settings.endpoint
                options["allow_http"] = settings.endpoint.startswith("http://")
            if settings.region:
                config["region"] = settings.region
            for name, key in (("AWS_ACCESS_KEY_ID", "access_key_id"), ("AWS_SECRET_ACCESS_KEY", "secret_access_key"),
                              ("AWS_SESSION_TOKEN", "session_token"), ("AWS_REGION", "region"),
                              ("AWS_DEFAULT_REGION", "region")):
                if environ.get(name) and key not in config:
                    config[key] = environ[name]
            hidden = _profile_config(config, environ)
            if "access_key_id" not in config and environ.get("AWS_EC2_METADATA_DISABLED", "").lower() == "true":
                raise RemoteError(f"remote {settings.display}: no AWS credentials: set AWS_ACCESS_KEY_ID and "
                                  "AWS_SECRET_ACCESS_KEY, or AWS_PROFILE (AWS_EC2_METADATA_DISABLED rules out "
                                  "the instance's own)")
            if environ.get("AWS_EC2_METADATA_SERVICE_ENDPOINT"):
                config["metadata_endpoint"] = environ["AWS_EC2_METADATA_SERVICE_ENDPOINT"]
            backend, bulk = (stores.S3Store(parts.netloc, prefix=prefix, config=config,  # type: ignore[arg-type]
                                            client_options=client, retry_config=retry)  # type: ignore[arg-type]
                             for client, retry in (_control(options, settings.timeout), (options, RETRY)))
        else:
            backend, bulk = (stores.from_url(f"{parts.scheme}://{parts.netloc}/{prefix}",  # type: ignore[call-overload]
                                             client_options=client, retry_config=retry)
                             for client, retry in (_control(options, settings.timeout), (options, RETRY)))
    except RemoteError:
        raise
    except Exception as exc:
        raise RemoteError(redact(f"remote {settings.display}: {store_words(exc)}", environ, hidden)) from None
    return Store(backend, settings.display, writable=writable, environ=environ, hidden=hidden, bulk=bulk)


def _profile_config(config: dict[str, Any], environ: Mapping[str, str]) -> tuple[str, ...]:
    """Fill what the environment left out of an S3 config from the AWS profile (keys only as
    a pair, so a key from one source never meets a secret from the other); its secrets."""
    from sparkspec.remote.awsprofile import read_profile

    profile = read_profile(environ)
    if profile is None:
        return ()
    if "access_key_id" not in config and "secret_access_key" not in config and profile.access_key_id:
        config.update(access_key_id=profile.access_key_id, secret_access_key=profile.secret_access_key)
        if profile.session_token and "session_token" not in config:
            config["session_token"] = profile.session_token
    if profile.region and "region" not in config:
        config["region"] = profile.region
    return profile.secrets
