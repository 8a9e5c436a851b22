"""A worker machine's cache of packed datasets: content-addressed, size-capped, shared safely.

Files are `<root>/<sha256>.pack`, named by the SHA-256 of their bytes (verified after each
download), so a file is never stale and two datasets with the same content share one copy.
Two locks per entry, both `flock` (they hold across threads and processes of one machine and go
away with a process that dies):

- `<sha>.fetch.lock`, exclusive while one job checks for the file and downloads it: a second job
  wanting the same file waits, then finds it there (one download per machine);
- `<sha>.use.lock`, shared by every job using the file (its memmap open) for as long as it trains.

Before a download, least recently used files (mtime, touched on every use) are evicted until the
new one fits under the cap (SAGAN_DATASET_CACHE_BYTES); a file whose use lock cannot be taken
exclusively is in use and is skipped. Unix only (fcntl), as the workers are.
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

log = logging.getLogger(__name__)
SUFFIX = ".pack"


class CacheError(RuntimeError):
    pass


def _human(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


def file_sha256(path: Path) -> str:
    sha = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            sha.update(chunk)
    return sha.hexdigest()


@contextmanager
def _flock(path: Path, mode: int) -> Iterator[None]:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, mode)
        yield
    finally:
        os.close(fd)  # releases the lock


class DatasetCache:
    def __init__(self, root: Path, max_bytes: int):
        self.root, self.max_bytes = Path(root), max_bytes
        self.root.mkdir(parents=True, exist_ok=True)

    def path(self, sha256: str) -> Path:
        if len(sha256) != 64 or not all(c in "0123456789abcdef" for c in sha256):
            raise CacheError(f"not a SHA-256: {sha256!r}")
        return self.root / f"{sha256}{SUFFIX}"

    def _lock(self, sha256: str, what: str) -> Path:
        return self.root / f"{sha256}.{what}.lock"

    def entries(self) -> list[tuple[Path, int, float]]:
        """(path, size, last use) of every cached file."""
        out = []
        for p in self.root.glob(f"*{SUFFIX}"):
            try:
                st = p.stat()
            except FileNotFoundError:
                continue
            out.append((p, st.st_size, st.st_mtime))
        return out

    def used_bytes(self) -> int:
        return sum(size for _, size, _ in self.entries())

    def _make_room(self, need: int, keep: str, note: Callable[[str], None]) -> None:
        """Evict least recently used files not in use until `need` more bytes fit the cap."""
        with _flock(self.root / ".evict.lock", fcntl.LOCK_EX):
            entries = sorted(self.entries(), key=lambda e: e[2])
            used = sum(size for _, size, _ in entries)
            for path, size, _ in entries:
                if used + need <= self.max_bytes:
                    return
                sha = path.name.removesuffix(SUFFIX)
                if sha == keep:
                    continue
                fd = os.open(self._lock(sha, "use"), os.O_RDWR | os.O_CREAT, 0o644)
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    os.close(fd)
                    continue  # a job is using it
                try:
                    path.unlink(missing_ok=True)
                    used -= size
                    note(f"evicted {sha[:12]} ({_human(size)}) from the dataset cache")
                finally:
                    os.close(fd)
            if used + need > self.max_bytes:
                note(
                    f"the dataset cache is over its cap ({_human(used + need)} of "
                    f"{_human(self.max_bytes)}, SAGAN_DATASET_CACHE_BYTES): the rest is in use"
                )

    @contextmanager
    def use(
        self,
        sha256: str,
        size: int,
        fetch: Callable[[Path], None],
        note: Callable[[str], None] = lambda text: None,
        label: str = "",
    ) -> Iterator[Path]:
        """The cached file of `sha256`, fetched (`fetch(part_path)`) only if it is not here.

        While the `with` block runs, the file is in use and never evicted. `note` gets one line
        per thing that happened (found, waited, downloaded, evicted), for the job's events.
        """
        path = self.path(sha256)
        label = label or sha256[:12]
        with _flock(self._lock(sha256, "use"), fcntl.LOCK_SH):
            fetch_lock = self._lock(sha256, "fetch")
            fd = os.open(fetch_lock, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    note(f"{label}: waiting for another job's download on this machine")
                    fcntl.flock(fd, fcntl.LOCK_EX)
                if path.is_file() and path.stat().st_size == size:
                    note(f"{label}: in this worker's dataset cache ({_human(size)})")
                else:
                    self._download(path, sha256, size, fetch, note, label)
                os.utime(path)  # the LRU's clock
            finally:
                os.close(fd)
            yield path

    def _download(
        self,
        path: Path,
        sha256: str,
        size: int,
        fetch: Callable[[Path], None],
        note: Callable[[str], None],
        label: str,
    ) -> None:
        self._make_room(size, sha256, note)
        part = self.root / f".{sha256}.{os.getpid()}.{threading.get_ident()}.part"
        note(f"{label}: downloading {_human(size)} into this worker's dataset cache")
        start = time.monotonic()
        try:
            fetch(part)
            got = file_sha256(part)
            if got != sha256:
                raise CacheError(
                    f"{label}: downloaded file has SHA-256 {got[:12]}..., expected "
                    f"{sha256[:12]}...: corrupt in storage or in transit"
                )
            part.replace(path)
        finally:
            part.unlink(missing_ok=True)
        took = time.monotonic() - start
        rate = _human(size / took) + "/s" if took > 0 else ""
        note(f"{label}: downloaded {_human(size)} in {took:.1f} s ({rate})")
        log.info("dataset cache: %s downloaded to %s", label, path)
