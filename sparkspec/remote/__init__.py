"""The team's render cache on object storage (DESIGN section 9): renders bought once per team.

Layers, bottom up (each a module; import the module you need, nothing here imports obstore):

settings   `resolve_remote(spec.remote, environ, remote=None|"off", mode=None|MODE) ->
           RemoteSettings | None`: url, mode ("read-write"|"read-only"), endpoint, region,
           claim_ttl, signing_key (from SPARKSPEC_REMOTE_SIGNING_KEY), `.signer`, `.identity`
           (names the remote in .sparkspec/ without secrets), `.writable`. `redact(text)`
           removes credential values from a message. Bad settings raise RemoteError.
layout     path builders and validators under `<prefix>/v1/`: `blob_path(sha)`,
           `entry_path(key, signer)`, `entry_prefix(shard)`, `parse_entry_path(path)`,
           `claim_path(key)`, `parse_claim_path`, `root_path(project, digest)`,
           `project_slug(name)`, `is_digest`, FORMAT, PROBES. Names read back from a remote go
           through the parse_* functions (hostile input: anything odd is None).
store      `open_store(settings, environ) -> Store` (no request made). `Store` (all async,
           paths relative to v1/): `head(path) -> ObjectInfo|None`, `get(path) ->
           (bytes, ObjectInfo)|None`, `download(path, dest) -> (size, sha256)|None` (streamed),
           `list_pages(prefix)` (async iterator of pages), `list(prefix)`, `put(path, bytes)`
           (S3: with the sha256 checksum), `create(path, bytes) -> etag|None` (If-None-Match),
           `update(path, bytes, etag) -> etag|None` (If-Match), `delete(path)`. Absent = None,
           lost condition = None, any other failure = RemoteError with the store's words.
           Read-only stores refuse writes before the network. `ObjectInfo(path, size, etag,
           modified)`.
entries    `encode_entry(CachedRender, signing_key) -> bytes`, `decode_entry(bytes, key,
           signing_key) -> CachedRender | reason` (validated; signature checked with a key).
transfer   `push_render(store, render, cache, signing_key, signer) -> created` (blobs with
           checksum, HEAD check, then the write-once entry: the commit point),
           `pull_render(store, render, cache, tmp_dir)` (stream, verify length and sha256,
           then local cache; raises `BlobProblem` for a missing/damaged blob),
           `check_format(store)`, `ensure_format(store)`.
index      `lookup(store, keys, signing_key, signer, with_claims=True, owner=None) -> Lookup`
           (`hits: {key: CachedRender}`, `claims: {key: Claim}` of other owners,
           `ignored: {key: reason}`): one listing per shard asked for more than one key.
claims     `Claim` (key, owner, user, host, pid, ttl, beat, task: ClaimTask|None;
           `.describe()` = "rendering on user@host, task id"), `Claims(store)`: `read`,
           `acquire(claim) -> Held|Seen`, `heartbeat(held, task) -> Held|None`,
           `take_over(mine, seen) -> Held|None`, `release(held)`, `live_keys()`;
           `ClaimWatch(ttl, monotonic).dead(seen)`: ETag unchanged for one ttl, own clock.
probe      `probe_conditional_writes(store) -> ProbeResult(conditional, detail)`;
           `remembered`/`remember` in .sparkspec/remote-probe.json.
queue      `PushQueue(state_dir, identity)`: `keys()`, `add(key)`, `remove(*keys)` in
           .sparkspec/remote-queue.json (failed uploads, retried by apply and `push`).
session    `open_remote(spec.remote, state_dir, environ, remote=, mode=) -> Remote | None`;
           `Remote`: `.settings`, `.store`, `.writable`, `.signer`, `.owner`, `.claims`,
           `.queue`, `lookup(keys)`, `pull(render, cache, tmp_dir)`, `push(render, cache)`,
           `new_claim(key)`, `claims_work() -> ProbeResult` (probe once; False read-only),
           `bad_keys()` / `mark_bad(key, reason)` (entries whose blob failed: misses).
"""
