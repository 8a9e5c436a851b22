"""Ranks started by torch's elastic agent (issue #25), on the CPU with gloo.

The caller of `train_distributed` is no rank: rank 0 asks the caller's evaluator (through
sagan_core.rank_channel), a callback's error comes back to the caller as itself, a run's own
error as its own type (a failed job, not a lost worker), and `sagan train` runs under a user's
own torchrun without a launch of its own.
"""

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from sagan_core.checkpoint import load_checkpoint
from sagan_core.config import TrainConfig
from sagan_core.data import DatasetError
from sagan_core.launch import train_distributed
from sagan_core.trainer import TrainerCallbacks


def config(**overrides) -> TrainConfig:
    fields = dict(
        dataset="digits", resolution=32, g_ch=2, d_ch=2, z_dim=8, batch_size=8, steps=4,
        log_every=1, checkpoint_every=2, sample_every=0, ema_start=1, ema_decay=0.9,
        variety_every=0, device="cpu", seed=5, diversity_weight=0.0, path="plain",
    )  # fmt: skip
    fields.update(overrides)
    return TrainConfig(**fields)


class Recorder(TrainerCallbacks):
    def __init__(self):
        self.metrics, self.checkpoints = {}, []

    def on_metrics(self, step, metrics):
        self.metrics.setdefault(step, {}).update(metrics)

    def on_checkpoint(self, step, path, tags):
        self.checkpoints.append((step, path))


class Scores(dict):
    protocol = {"metric": "fake", "samples": 1}


class Evaluator:
    """A closure over what cannot cross to a rank (here: a lock), as the worker's is."""

    def __init__(self):
        import threading

        self.lock = threading.Lock()
        self.seen = []

    def __call__(self, step, G):
        with self.lock:
            self.seen.append((step, {k: v.clone() for k, v in G.state_dict().items()}))
        return Scores(fid=100.0 - step, is_=1.0)


class Protocols(Recorder):
    def __init__(self):
        super().__init__()
        self.protocols = []

    def on_protocol(self, step, protocol):
        self.protocols.append((step, protocol))


def test_rank_0_is_evaluated_by_the_callers_evaluator_with_its_protocol(tmp_path):
    evaluator, recorder = Evaluator(), Protocols()
    result = train_distributed(
        config(batch_size=4, gpus=2, steps=4, eval_every=2), tmp_path, recorder, evaluator
    )
    assert [s for s, _ in evaluator.seen] == [2, 4]
    assert recorder.metrics[4]["fid"] == 96.0 and recorder.metrics[2]["fid"] == 98.0
    assert recorder.protocols == [(2, Scores.protocol), (4, Scores.protocol)]
    final = load_checkpoint(result.last_checkpoint)  # what was scored is rank 0's G_ema
    for k, v in final["G_ema"].items():
        torch.testing.assert_close(evaluator.seen[-1][1][k], v)


class Outage(Exception):
    """What an upload that cannot reach storage raises in the worker's callbacks."""


class FailingUpload(TrainerCallbacks):
    def on_checkpoint(self, step, path, tags):
        raise Outage(f"storage unreachable at step {step}")


def test_a_callbacks_error_reaches_the_caller_as_itself(tmp_path):
    with pytest.raises(Outage, match="storage unreachable at step 2"):
        train_distributed(config(batch_size=4, gpus=2, steps=50), tmp_path, FailingUpload())


def test_a_runs_own_error_on_every_rank_is_that_error_not_a_lost_rank(tmp_path):
    cfg = config(batch_size=4, gpus=2)
    data = config(dataset="no-such-set")  # (only the ranks build their data from it)
    with pytest.raises(DatasetError, match="unknown dataset 'no-such-set'"):
        train_distributed(cfg, tmp_path / "run", Recorder(), data_config=data)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_sagan_train_runs_under_a_users_own_torchrun(tmp_path):
    run_dir = tmp_path / "run"
    command = [
        sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc-per-node", "2",
        "--rdzv-backend", "c10d", "--rdzv-endpoint", f"127.0.0.1:{free_port()}",
        "-m", "sagan_core", "train", "--dataset", "digits", "--resolution", "32", "--g-ch", "2",
        "--d-ch", "2", "--z-dim", "8", "--batch-size", "4", "--steps", "3", "--log-every", "1",
        "--checkpoint-every", "2", "--sample-every", "0", "--variety-every", "0",
        "--device", "cpu", "--path", "plain", "--preset", "paper", "--run-dir", str(run_dir),
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("step 3: checkpoint") == 1  # rank 0 alone says where it ended
    [final] = sorted(Path(run_dir, "checkpoints").glob("*.pt"))  # one series: rank 0's
    ckpt = load_checkpoint(final)
    assert ckpt["step"] == 3 and ckpt["config"]["gpus"] == 2
    assert not list(Path(run_dir, "rank-1").glob("**/*.pt"))  # rank 1 writes no checkpoint
