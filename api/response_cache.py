"""Rendered responses kept by ETag: a thread-safe LRU of bytes, bounded in entries and size.

A key names everything the bytes depend on (the resource, its version, the query), so an entry is
never stale: a changed resource has a new version, hence a new key, and old entries age out.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable


class ResponseCache:
    def __init__(self, max_entries: int = 256, max_bytes: int = 64 << 20):
        self.max_entries, self.max_bytes = max_entries, max_bytes
        self._entries: OrderedDict[str, tuple[bytes, str]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    @staticmethod
    def etag(resource: str, version: int, query: Hashable) -> str:
        text = f"{resource}\n{version}\n{query!r}"
        return '"' + hashlib.sha256(text.encode()).hexdigest()[:32] + '"'

    def get(self, etag: str) -> tuple[bytes, str] | None:
        """The cached (content, media type) for the ETag, or None."""
        with self._lock:
            if etag in self._entries:
                self._entries.move_to_end(etag)
                return self._entries[etag]
        return None

    def get_or_render(
        self, etag: str, render: Callable[[], tuple[bytes, str]]
    ) -> tuple[bytes, str]:
        """The cached (content, media type) for the ETag, or render() it and keep it."""
        with self._lock:
            if etag in self._entries:
                self._entries.move_to_end(etag)
                return self._entries[etag]
        made = render()  # outside the lock: two racing renders give the same bytes
        with self._lock:
            if etag not in self._entries and len(made[0]) <= self.max_bytes // 4:
                self._entries[etag] = made
                self._bytes += len(made[0])
                while len(self._entries) > self.max_entries or self._bytes > self.max_bytes:
                    _, (old, _) = self._entries.popitem(last=False)
                    self._bytes -= len(old)
        return made
