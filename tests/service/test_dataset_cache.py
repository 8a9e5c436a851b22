"""worker.dataset_cache: one download per machine, LRU eviction under the cap, never in use."""

from __future__ import annotations

import hashlib
import multiprocessing
import threading
import time
from pathlib import Path

import pytest

from worker.dataset_cache import CacheError, DatasetCache


def blob(n: int, seed: int) -> tuple[bytes, str]:
    data = bytes((seed * 7 + i) % 251 for i in range(n))
    return data, hashlib.sha256(data).hexdigest()


def slow_fetch(data: bytes, log: Path):  # noqa: ANN201
    def fetch(part: Path) -> None:
        with open(log, "a") as f:  # one line per download, from any thread or process
            f.write("fetch\n")
        time.sleep(0.3)  # long enough for the other user to arrive while it downloads
        part.write_bytes(data)

    return fetch


def _use_in_process(root: str, data: bytes, sha: str, log: str, out: str) -> None:
    cache = DatasetCache(Path(root), 10_000)
    notes: list[str] = []
    with cache.use(sha, len(data), slow_fetch(data, Path(log)), notes.append) as path:
        Path(out).write_text(path.read_bytes().hex()[:16] + "\n" + "\n".join(notes))


def test_two_threads_and_two_processes_download_once(tmp_path: Path) -> None:
    data, sha = blob(3000, 1)
    cache = DatasetCache(tmp_path / "cache", 10_000)
    log = tmp_path / "fetches.log"
    notes: list[list[str]] = [[], []]
    paths: list[Path] = []

    def user(i: int) -> None:
        with cache.use(sha, len(data), slow_fetch(data, log), notes[i].append) as path:
            paths.append(path)
            assert path.read_bytes() == data

    threads = [threading.Thread(target=user, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert log.read_text().count("fetch") == 1
    assert paths[0] == paths[1] == cache.path(sha)
    joined = notes[0] + notes[1]
    assert sum("downloaded" in n for n in joined) == 1
    assert any("waiting for another job's download" in n for n in joined)

    data2, sha2 = blob(2000, 2)
    ctx = multiprocessing.get_context("spawn")
    procs = [
        ctx.Process(
            target=_use_in_process,
            args=(
                str(tmp_path / "cache"),
                data2,
                sha2,
                str(tmp_path / "f2.log"),
                str(tmp_path / f"out{i}"),
            ),
        )  # fmt: skip
        for i in range(2)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    assert (tmp_path / "f2.log").read_text().count("fetch") == 1
    outs = [(tmp_path / f"out{i}").read_text() for i in range(2)]
    assert sum("downloaded" in o for o in outs) == 1
    assert sum("in this worker's dataset cache" in o for o in outs) == 1


def test_least_recently_used_files_make_room_but_not_those_in_use(tmp_path: Path) -> None:
    cache = DatasetCache(tmp_path / "cache", 2500)
    (a, sa), (b, sb), (c, sc) = blob(1000, 1), blob(1000, 2), blob(1000, 3)
    log = tmp_path / "log"

    def put(data: bytes) -> object:
        return lambda part: part.write_bytes(data)

    with cache.use(sa, 1000, put(a)):
        pass
    time.sleep(0.02)
    with cache.use(sb, 1000, put(b)) as in_use:
        time.sleep(0.02)
        with cache.use(sa, 1000, slow_fetch(a, log)):  # a hit: a becomes the newest
            pass
        notes: list[str] = []
        # c needs room: b is older but in use, so a goes
        with cache.use(sc, 1000, put(c), notes.append):
            pass
        assert in_use.is_file()
    assert not cache.path(sa).exists() and cache.path(sb).exists() and cache.path(sc).exists()
    assert any("evicted" in n and sa[:12] in n for n in notes)
    assert not log.exists()  # the hit did not download
    assert cache.used_bytes() == 2000


def test_a_download_that_does_not_match_its_hash_is_refused(tmp_path: Path) -> None:
    cache = DatasetCache(tmp_path / "cache", 10_000)
    data, sha = blob(100, 1)
    with pytest.raises(CacheError, match="SHA-256"):
        with cache.use(sha, 100, lambda part: part.write_bytes(b"x" * 100)):
            pass
    assert not cache.path(sha).exists()
    assert list((tmp_path / "cache").glob("*.part")) == []
