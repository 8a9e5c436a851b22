"""The identities an API process has looked up, trusted for a few seconds
(SAGAN_TOKEN_CACHE_SECONDS), as Kubernetes' API server caches its webhook token reviews: a
request of a known token costs no database round trip and no thread hop. Only successful lookups
are kept (a new token works at once, a wrong one is asked about every time), under the token's
hash, at most MAX_ENTRIES of them.

The price: a token revoked in the database keeps working in a process that trusts it until its
entry expires."""

from __future__ import annotations

import threading
import time
from collections import OrderedDict

from store.tokens import Identity, token_hash

MAX_ENTRIES = 10_000


class TokenCache:
    def __init__(self, seconds: float, max_entries: int = MAX_ENTRIES):
        self.seconds, self.max_entries = seconds, max_entries
        self._entries: OrderedDict[str, tuple[Identity, float]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, token: str) -> Identity | None:
        if self.seconds <= 0:
            return None
        key = token_hash(token)
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return None
            if entry[1] <= time.monotonic():
                del self._entries[key]
                return None
            return entry[0]

    def put(self, token: str, identity: Identity) -> None:
        if self.seconds <= 0:
            return
        key = token_hash(token)
        with self._lock:
            self._entries[key] = (identity, time.monotonic() + self.seconds)
            self._entries.move_to_end(key)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)
