"""Replicas: separate OS processes, each with its own ``SemanticCache``, share one Redis.

The child processes are real Python interpreters started with ``subprocess``; each builds its
own ``SemanticCache`` on its own ``RedisBackend`` connection. The parent's cache is built before
the child writes, as a long-running replica's would be, so nothing is shared but the server.
Lookups use paraphrases (never the stored text), so the hit comes from the vector search
(``Tier.SEMANTIC``), not the exact-text key.
"""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from semcache import CachePolicy, Scope, SemanticCache, Tier
from semcache.testing import HashingEmbedder

ROOT = Path(__file__).resolve().parent.parent

STORED = "what is the refund policy for damaged items"
PARAPHRASE = "what is the refund policy for damaged goods"
STORED_BY_PARENT = "how long does shipping take to canada"
PARAPHRASE_OF_PARENT = "how long does shipping take to canada usually"

_REPLICA = """
import json, sys
from semcache import CachePolicy, Scope, SemanticCache
from semcache.backends.redis import RedisBackend
from semcache.testing import HashingEmbedder
url, name, action, text = sys.argv[1:5]
cache = SemanticCache(embedder=HashingEmbedder(dim=64), backend=RedisBackend(url, name=name),
                      policy=CachePolicy(min_similarity=0.7))
scope = Scope(model="m", tenant="acme")
if action == "store":
    entry = cache.store(text, {"from": "child"}, scope)
    print(json.dumps({"id": entry.id}))
else:
    hit = cache.lookup(text, scope)
    print(json.dumps({"response": hit.entry.response if hit.entry else None,
                      "id": hit.entry.id if hit.entry else None,
                      "tier": hit.tier.value if hit.tier else None}))
cache.close()
"""


def _replica(url: str, name: str, action: str, text: str) -> dict[str, object]:
    out = subprocess.run(
        [sys.executable, "-c", _REPLICA, url, name, action, text],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
        check=True,
    )
    result: dict[str, object] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


@pytest.mark.redis
def test_entry_stored_by_one_process_is_a_semantic_hit_in_another(redis_url: str) -> None:
    from semcache.backends.redis import RedisBackend

    name = f"rep{uuid.uuid4().hex[:12]}"
    scope = Scope(model="m", tenant="acme")
    backend = RedisBackend(redis_url, name=name)
    cache = SemanticCache(
        embedder=HashingEmbedder(dim=64), backend=backend, policy=CachePolicy(min_similarity=0.7)
    )
    try:
        # Nothing yet: the running replica misses.
        assert not cache.lookup(PARAPHRASE, scope).hit
        stored = _replica(redis_url, name, "store", STORED)
        hit = cache.lookup(PARAPHRASE, scope)
        assert hit.entry is not None
        assert hit.tier is Tier.SEMANTIC
        assert hit.entry.id == stored["id"]
        assert hit.entry.response == {"from": "child"}

        # And the other way: an entry this process stores is served to a fresh process.
        mine = cache.store(STORED_BY_PARENT, {"from": "parent"}, scope)
        seen = _replica(redis_url, name, "lookup", PARAPHRASE_OF_PARENT)
        assert seen == {"response": {"from": "parent"}, "id": mine.id, "tier": "semantic"}
    finally:
        backend.drop()
        cache.close()
