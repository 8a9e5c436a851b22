"""The ranks' launcher of a multi-process run (issue #15): `train_distributed` is the one entry (the
core CLI's `--gpus N` and the worker). The calling process is rank 0 (its callbacks stay where they
were made), ranks 1..N-1 are child processes (`python -m sagan_core.launch SPEC RANK`). A child
exits when its parent dies (its stdin closes); a child that dies makes rank 0's next collective
fail, and rank 0 raises RankLostError. What every rank runs in is sagan_core.distributed.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import threading
import traceback
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.distributed as dist

from .config import ConfigError, Limits, TrainConfig
from .data import DatasetError, build_dataset
from .device import resolve_device
from .distributed import JOIN_TIMEOUT, RankLostError, join, leave, rank_device
from .trainer import DivergedError, Trainer


def _watch_parent() -> None:
    """Exit when the parent (rank 0) is gone: our stdin is its pipe, and EOF means it died."""

    def wait() -> None:
        try:  # the raw descriptor: a buffered read would hold a lock the interpreter's exit needs
            while os.read(0, 4096):
                pass
        finally:
            os._exit(3)

    threading.Thread(target=wait, name="sagan-parent-watch", daemon=True).start()


def _threads_per_rank(world_size: int) -> int:
    return max(1, (os.cpu_count() or 1) // world_size)


def rank_main(spec_path: str, rank: int) -> int:
    """A child rank: join, train without callbacks, exit 0; a failure's line goes to a file."""
    _watch_parent()
    spec = json.loads(Path(spec_path).read_text())
    Path(spec["run_dir"], f"rank-{rank}.pid").write_text(str(os.getpid()))  # for operators, tests
    try:
        cfg = TrainConfig.from_dict(spec["config"])  # device "cuda" or "cpu": join picks cuda:r
        device = torch.device(rank_device(cfg.device, rank))
        if device.type == "cpu":
            torch.set_num_threads(_threads_per_rank(spec["world_size"]))
        store = dist.TCPStore(
            spec["host"], spec["port"], spec["world_size"], is_master=False, timeout=JOIN_TIMEOUT
        )
        ranks = join(rank, spec["world_size"], store, device)
        dataset = build_dataset(TrainConfig.from_dict(spec["data_config"]).resolved())
        limits = Limits(**spec["limits"]) if spec.get("limits") else None
        run_dir = Path(spec["run_dir"]) / f"rank-{rank}"
        trainer = Trainer(cfg, run_dir, dataset=dataset, limits=limits, ranks=ranks)
        trainer.run(resume_from=spec.get("resume_from"))
        return 0
    except Exception as e:
        traceback.print_exc()
        Path(spec["run_dir"], f"rank-{rank}.error").write_text(f"{type(e).__name__}: {e}"[:500])
        return 1
    finally:
        leave()


def train_distributed(
    config,  # noqa: ANN001  (a TrainConfig with gpus > 1)
    run_dir: Path | str,
    callbacks=(),  # noqa: ANN001
    evaluator=None,  # noqa: ANN001
    dataset=None,  # noqa: ANN001
    limits=None,  # noqa: ANN001
    resume_from: Path | str | None = None,
    data_config=None,  # noqa: ANN001  (what the children build their dataset from)
):
    """Run `config` on config.gpus processes, this one rank 0; returns rank 0's TrainResult.

    Rank 0 works in `run_dir` (its checkpoints in run_dir/checkpoints, as a one-process run's),
    the others in run_dir/rank-N. `data_config` is the config the children build their dataset
    with (default `config`; the worker passes a stored dataset's local packed file). Raises
    RankLostError if a child died.
    """
    cfg = config.resolved()
    world = cfg.gpus
    # Every rank's config says "cuda" (or "cpu"); each joins on its own cuda:r, which becomes its
    # current device, and the Trainer takes that (the config itself refuses cuda:N for gpus > 1).
    kind = resolve_device(cfg.device).type
    if kind not in ("cuda", "cpu"):
        raise ConfigError("gpus", f"a run of gpus={world} runs on CUDA or the CPU, not {kind}")
    cfg = dataclasses.replace(cfg, device=kind)
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    device = torch.device(rank_device(kind, 0))
    store = dist.TCPStore(
        "127.0.0.1", 0, world, is_master=True, timeout=JOIN_TIMEOUT, wait_for_workers=False
    )
    spec = {
        "config": cfg.to_dict(),
        "data_config": (data_config or cfg).to_dict(),
        "world_size": world,
        "host": "127.0.0.1",
        "port": store.port,
        "run_dir": str(run_dir),
        "resume_from": str(resume_from) if resume_from else None,
        "limits": dataclasses.asdict(limits) if limits is not None else None,
    }
    spec_path = run_dir / "ranks.json"
    spec_path.write_text(json.dumps(spec))
    children: list[subprocess.Popen] = []
    threads = torch.get_num_threads()
    try:
        for rank in range(1, world):
            children.append(
                subprocess.Popen(
                    [sys.executable, "-m", "sagan_core.launch", str(spec_path), str(rank)],
                    stdin=subprocess.PIPE,
                )
            )
        if device.type == "cpu":
            torch.set_num_threads(_threads_per_rank(world))
        try:
            ranks = join(0, world, store, device)
            trainer = Trainer(cfg, run_dir, callbacks, evaluator, dataset, limits, ranks=ranks)
            return trainer.run(resume_from=resume_from)
        except Exception as e:
            lost = None if _is_job_error(e) else _lost_child(children, run_dir)
            if lost is not None:
                raise RankLostError(*lost) from e
            raise
    finally:
        leave()
        torch.set_num_threads(threads)
        _stop(children)


def _is_job_error(error: BaseException) -> bool:
    """The run's own failures (the same on every rank), which a lost child does not explain."""
    return isinstance(error, ConfigError | DatasetError | DivergedError)


def _lost_child(children: Sequence[subprocess.Popen], run_dir: Path) -> tuple[int, str] | None:
    """(rank, what happened) of the first child that died, waiting briefly for it to be seen."""
    for rank, child in enumerate(children, start=1):
        try:
            code = child.wait(timeout=5)
        except subprocess.TimeoutExpired:
            continue
        if code != 0:
            error = run_dir / f"rank-{rank}.error"
            how = f"exit code {code}" if code > 0 else f"killed by signal {-code}"
            if error.exists():
                how += f": {error.read_text().strip()}"
            return rank, how
    return None


def _stop(children: Sequence[subprocess.Popen]) -> None:
    """Close the children's pipes (they exit), then wait; kill any that linger."""
    for child in children:
        if child.stdin is not None:
            child.stdin.close()
    for child in children:
        try:
            child.wait(timeout=30)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()


if __name__ == "__main__":
    sys.exit(rank_main(sys.argv[1], int(sys.argv[2])))
