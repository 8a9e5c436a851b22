"""Checkpoint stall benchmark (issue #24): how long the training loop stands still per checkpoint
with the synchronous upload against the background one (worker.uploads), in one run.

    python -m worker.bench_checkpoint                     # 128 px, 1000 classes: the paper's size
    python -m worker.bench_checkpoint --resolution 64 --checkpoints 4 --every 100 --work cpu

The path a worker runs: the real JobCallbacks and S3 storage, a moto S3 server over HTTP (in a
process of its own, as S3 is another machine's), a SQLite database and a heartbeat thread. The
checkpoint holds what the trainer's holds (G, D, G_ema and both Adam states of the paper preset)
and is written as the trainer writes it (save, hand over, delete the previous file). Between
checkpoints runs a simulated loop of training steps: `--work sleep` stands for a GPU-bound loop
(its host thread mostly waits on the device), `--work cpu` for a host-bound one that competes with
the upload for the CPUs. The stall is what the loop spends in the save (the host copy) and in
on_checkpoint; the background path stalls once more at the end, draining its last upload.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import io
import multiprocessing
import os
import platform
import socket
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

BUCKET = "sagan-bench"
WORKER = "bench-worker"


@dataclass
class Row:
    path: str
    megabytes: float
    saves: list[float]
    stalls: list[float]
    drain_s: float
    upload_s: float  # mean upload + registration of one checkpoint (the Prometheus histogram)
    steps_s: float  # time inside the simulated training steps
    wall_s: float


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m worker.bench_checkpoint", description=__doc__.split("\n\n")[0]
    )
    p.add_argument("--resolution", type=int, default=128, help="paper preset at 32, 64, 128 px")
    p.add_argument("--classes", type=int, default=1000, help="default: ImageNet's, as the paper")
    p.add_argument("--checkpoints", type=int, default=3, help="checkpoints per path")
    p.add_argument("--every", type=int, default=150, help="training steps between checkpoints")
    p.add_argument("--step-seconds", type=float, default=0.1, help="one simulated step")
    p.add_argument("--work", choices=("sleep", "cpu"), default="sleep", help="see above")
    p.add_argument("--device", default="cpu", help="where the models live (cuda: host copy)")
    return p.parse_args(argv)


# -- the S3 server ----------------------------------------------------------------------------


def serve_moto(port: int) -> None:
    """The moto S3 server's process: serves until it is terminated, without a line per request."""
    import logging

    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    with contextlib.redirect_stdout(io.StringIO()):  # its "Starting a new Thread ..." line
        ThreadedMotoServer(ip_address="127.0.0.1", port=port).start()
    threading.Event().wait()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_moto() -> tuple[multiprocessing.Process, str]:
    # moto accepts any credentials; boto3 must find some and must not read the developer's.
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    port = free_port()
    server = multiprocessing.get_context("spawn").Process(
        target=serve_moto, args=(port,), daemon=True
    )
    server.start()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return server, f"http://127.0.0.1:{port}"
        time.sleep(0.2)
    server.terminate()
    raise RuntimeError(f"moto did not listen on port {port} within 60 s")


# -- the checkpoint ---------------------------------------------------------------------------


def paper_contents(resolution: int, classes: int, device: str) -> dict:
    """What Trainer._save hands to save_checkpoint for the paper preset, Adam states filled."""
    import torch

    from sagan_core.checkpoint import build_generator
    from sagan_core.config import TrainConfig
    from sagan_core.models import Discriminator

    cfg = TrainConfig(
        dataset="synthetic", resolution=resolution, num_classes=classes, preset="paper"
    ).resolved()
    G = build_generator(cfg).to(device)
    D = Discriminator(cfg.num_classes, cfg.resolution, cfg.d_ch).to(device)
    betas = (cfg.beta1, cfg.beta2)
    opt_g = torch.optim.Adam(G.parameters(), lr=cfg.lr_g, betas=betas, eps=1e-6)
    opt_d = torch.optim.Adam(D.parameters(), lr=cfg.lr_d, betas=betas, eps=1e-6)
    for model, opt in ((G, opt_g), (D, opt_d)):  # one step: both moments exist, as after step 1
        for p in model.parameters():
            p.grad = torch.zeros_like(p)
        opt.step()
    return {
        "G": G.state_dict(),
        "D": D.state_dict(),
        "G_ema": copy.deepcopy(G).state_dict(),
        "opt_g": opt_g.state_dict(),
        "opt_d": opt_d.state_dict(),
        "best_fid": float("inf"),
        "config": cfg.to_dict(),
        "class_names": [f"class{i}" for i in range(classes)],
    }


def warm_up(contents: dict) -> None:
    """One unmeasured save: the first write of a process is slower (the page cache grows, the
    pickler warms up), and neither path should pay for it."""
    from sagan_core.checkpoint import save_checkpoint

    with tempfile.TemporaryDirectory(prefix="bench-warm-up-") as tmp:
        save_checkpoint(Path(tmp) / "warm-up.pt", step=0, **contents)


# -- the simulated training loop --------------------------------------------------------------


def training_step(work: str, seconds: float) -> Callable[[], None]:
    """One step: a wait (`sleep`), or a fixed amount of host work that takes `seconds` on an
    idle machine (`cpu`), so an upload competing for the CPUs makes the steps longer. The work is
    one thread's, as a GPU trainer's host work is (its Python thread launching kernels): torch's
    own threads would measure OpenMP's spinning on busy cores rather than the upload."""
    if work == "sleep":
        return lambda: time.sleep(seconds)
    import torch

    torch.set_num_threads(1)
    a = torch.randn(256, 256)

    def burn(n: int) -> None:
        for _ in range(n):
            a @ a

    started, n = time.perf_counter(), 50
    burn(n)
    per_call = (time.perf_counter() - started) / n
    calls = max(1, round(seconds / per_call))
    return lambda: burn(calls)


# -- one path ---------------------------------------------------------------------------------


def bench_settings(root: Path, endpoint: str, background: bool):  # noqa: ANN201
    from store.migrate import upgrade
    from store.settings import Settings

    root.mkdir(parents=True)
    settings = Settings(
        data_dir=root,
        storage="s3",
        s3_bucket=BUCKET,
        s3_endpoint_url=endpoint,
        background_uploads=background,
        keep_checkpoints=1,  # moto keeps objects: the newest only (pruning is part of the path)
    )
    upgrade(settings.resolved_database_url())
    return settings


def running_job(settings) -> str:  # noqa: ANN001
    from store import jobs
    from store.db import session_scope
    from worker import job_life

    with session_scope(settings) as session:
        job, _ = jobs.create_job(
            session, owner="bench", kind="train", config={"preset": "paper"}, total_steps=0
        )
    job_life.claim(settings, job.id, WORKER, "train")
    return job.id


def upload_totals() -> tuple[float, float]:
    from prometheus_client import REGISTRY

    total = REGISTRY.get_sample_value("sagan_checkpoint_upload_seconds_sum") or 0.0
    count = REGISTRY.get_sample_value("sagan_checkpoint_upload_seconds_count") or 0.0
    return total, count


def run_path(  # noqa: ANN001
    name: str, background: bool, args, contents: dict, endpoint: str, step_once: Callable[[], None]
) -> Row:
    """One path end to end: its own database and job, the S3 server's bucket, a heartbeat."""
    from store.storage import storage_from_settings
    from worker.callbacks import JobCallbacks
    from worker.liveness import JobLiveness

    with tempfile.TemporaryDirectory(prefix=f"bench-{name}-") as tmp:
        settings = bench_settings(Path(tmp) / "data", endpoint, background)
        job_id = running_job(settings)
        before = upload_totals()
        with JobLiveness(settings, job_id, WORKER) as liveness:
            callbacks = JobCallbacks(
                job_id,
                WORKER,
                settings,
                storage_from_settings(settings),
                liveness,
                resolution=args.resolution,
                class_names=contents["class_names"],
            )
            row = train(name, callbacks, Path(tmp) / "run", args, contents, step_once)
        assert callbacks.last_checkpoint_step == args.checkpoints * args.every  # all registered
    after = upload_totals()
    row.upload_s = (after[0] - before[0]) / max(after[1] - before[1], 1)
    return row


def train(  # noqa: ANN001
    name: str, callbacks, run_dir: Path, args, contents: dict, step_once: Callable[[], None]
) -> Row:
    """The simulated run: steps, then a checkpoint saved and handed over as Trainer._save does
    (the previous file deleted once the next is handed over), and the drain _train does."""
    from sagan_core.checkpoint import checkpoint_path, save_checkpoint

    saves, stalls, steps_s, previous = [], [], 0.0, None
    started = time.perf_counter()
    for i in range(1, args.checkpoints + 1):
        t = time.perf_counter()
        for _ in range(args.every):
            step_once()
        steps_s += time.perf_counter() - t
        step = i * args.every
        t = time.perf_counter()
        path = save_checkpoint(checkpoint_path(run_dir, step), step=step, **contents)
        saves.append(time.perf_counter() - t)
        callbacks.on_checkpoint(step, path, {"latest"})
        stalls.append(time.perf_counter() - t)
        if previous is not None:
            previous.unlink(missing_ok=True)
        megabytes, previous = path.stat().st_size / 2**20, path
    t = time.perf_counter()
    callbacks.drain()
    drain_s = time.perf_counter() - t
    wall_s = time.perf_counter() - started
    return Row(name, megabytes, saves, stalls, drain_s, 0.0, steps_s, wall_s)


# -- the report -------------------------------------------------------------------------------


def machine() -> str:
    import torch

    cpus = os.cpu_count()
    gpu = f", {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ""
    return (
        f"{platform.machine()} {cpus} CPUs{gpu}, Python {platform.python_version()}, "
        f"torch {torch.__version__}"
    )


def print_table(rows: list[Row], args) -> None:  # noqa: ANN001
    every_s = args.every * args.step_seconds
    print(
        f"paper preset, {args.resolution} px, {args.classes} classes; {args.checkpoints} "
        f"checkpoints, one every {args.every} steps of {args.step_seconds:g} s ({args.work}, "
        f"~{every_s:g} s); moto S3 over HTTP, SQLite; {machine()}"
    )
    print(
        f"{'path':>10} {'ckpt MiB':>8} {'save s':>7} {'stall med':>10} {'stall max':>10} "
        f"{'end drain':>10} {'upload s':>9} {'steps s':>8} {'wall s':>7}"
    )
    for r in rows:
        print(
            f"{r.path:>10} {r.megabytes:>8.0f} {statistics.median(r.saves):>7.2f} "
            f"{statistics.median(r.stalls):>10.2f} {max(r.stalls):>10.2f} {r.drain_s:>10.2f} "
            f"{r.upload_s:>9.2f} {r.steps_s:>8.1f} {r.wall_s:>7.1f}"
        )
    print(
        "stall: the loop's time in the save (host copy) + on_checkpoint, per checkpoint; "
        "end drain: waiting for the last upload after the run; upload s: upload + registration "
        "(sagan_checkpoint_upload_seconds)"
    )


def main(argv: list[str] | None = None) -> int:
    import logging

    import boto3

    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    server, endpoint = start_moto()
    try:
        boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket=BUCKET)
        contents = paper_contents(args.resolution, args.classes, args.device)
        warm_up(contents)
        step_once = training_step(args.work, args.step_seconds)  # the same work for both paths
        rows = [
            run_path(name, background, args, contents, endpoint, step_once)
            for name, background in (("sync", False), ("background", True))
        ]
    finally:
        server.terminate()
        server.join(timeout=10)
    print_table(rows, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
