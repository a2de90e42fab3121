"""A fake of every API that serves the model: a real HTTP server on 127.0.0.1 for tests and benchmarks.

One task store (`store`), three wire adapters on one server, each on its own paths:

- the gateway's generation protocol (reference section 5): `POST /model/v1/generation`,
  `GET /model/v1/generation/task/{id}` (`generation`);
- the gateway's queue protocol (section 7): `POST /model/v1/queue/{model}`, then the
  `status_url`, `response_url` and `cancel_url` of its answer (`queue`);
- upstream's own API (section 8) under `/api/v3` (`ark`): create, query, list, cancel.

A task made through one adapter lives in the one store, renders with the local renderer
(or placeholder or template bytes), waits in the queue for `queue_time` and then renders for
`latency`, and is served by signed download URLs shared by all three. Faults are injected
per endpoint, whatever the dialect: "create", "query", "result" (the queue's response_url),
"cancel", "list", "video", "image" ("download" = both).

    api = FakeSparkAPI(api_key="k", latency=(0.2, 1.0), seed=7).start()
    api.base_url       # gateway (generation and queue protocols)
    api.ark_base_url   # upstream: base_url + "/api/v3"
    api.inject("create", "status", status=429, headers={"Retry-After": "3"})
    api.outcome("failed", code="003021098", message="generation failed")
    ...
    api.stop()
"""

from __future__ import annotations

from fakeapi.store import ARK_MODEL, MODEL, FakeSparkAPI, Fault, Outcome, Task, params_key

__all__ = ["ARK_MODEL", "MODEL", "FakeSparkAPI", "Fault", "Outcome", "Task", "params_key"]
