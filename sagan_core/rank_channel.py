"""Rank 0's line to the caller of a multi-process run (issue #25): the callbacks and the evaluator.

The ranks are processes of torch's elastic agent; the callbacks (the worker's: rows, uploads,
cancel) and the evaluator (a closure over storage) stay in the process that called
`train_distributed`. Rank 0 holds a `RemoteCallbacks` (a TrainerCallbacks) and a `RemoteEvaluator`:
each event is a request on a spawn-context queue and rank 0 waits for its reply, so the events
keep their order and the trainer's "the previous checkpoint goes once on_checkpoint returned"
stays true. `ChannelServer` is the caller's thread that answers them with the real callbacks.
An exception of a real callback is kept by the server (`error`, re-raised by the caller once the
ranks ended) and rank 0 raises CallerError, which ends the gang.
"""

from __future__ import annotations

import io
import multiprocessing as mp
import queue
import threading
import uuid
from pathlib import Path
from typing import Any

import torch

from .callbacks import TrainerCallbacks
from .checkpoint import build_generator
from .config import TrainConfig

# The events rank 0 forwards: TrainerCallbacks' methods, called with the same arguments.
EVENTS = (
    "on_metrics",
    "on_checkpoint",
    "should_stop",
    "on_samples",
    "on_note",
    "on_warning",
    "on_protocol",
)


class CallerError(RuntimeError):
    """A callback or the evaluator of the caller failed; the caller re-raises the real error."""


class Scored(dict):
    """An evaluator's metrics, with the `protocol` the trainer reads if the real result had one."""

    protocol: dict | None = None


class Channel:
    """Two spawn-context queues: requests from rank 0, replies to it (picklable at spawn)."""

    def __init__(self):
        ctx = mp.get_context("spawn")
        self.requests = ctx.Queue()
        self.replies = ctx.Queue()

    def call(self, kind: str, *args: Any) -> Any:
        """A round trip from rank 0: the reply's value, or CallerError if the caller failed."""
        ask = uuid.uuid4().hex  # a reply meant for a rank 0 of an earlier (restarted) gang: dropped
        self.requests.put((ask, kind, args))
        while True:
            answer, ok, value = self.replies.get()
            if answer == ask:
                break
        if not ok:
            raise CallerError(value)
        return value


class RemoteCallbacks(TrainerCallbacks):
    """Rank 0's callbacks: every event is answered by the caller's real callbacks."""

    def __init__(self, channel: Channel):
        self.channel = channel

    def on_metrics(self, step: int, metrics: dict[str, float]) -> None:
        self.channel.call("on_metrics", step, {k: float(v) for k, v in metrics.items()})

    def on_checkpoint(self, step: int, path: Path, tags: set[str]) -> None:
        self.channel.call("on_checkpoint", step, Path(path), set(tags))

    def should_stop(self, step: int) -> bool:
        return bool(self.channel.call("should_stop", step))

    def on_samples(self, step: int, png: bytes) -> None:
        self.channel.call("on_samples", step, bytes(png))

    def on_note(self, step: int, message: str) -> None:
        self.channel.call("on_note", step, message)

    def on_warning(self, step: int, message: str) -> None:
        self.channel.call("on_warning", step, message)

    def on_protocol(self, step: int, protocol: dict) -> None:
        self.channel.call("on_protocol", step, protocol)


class RemoteEvaluator:
    """Rank 0's evaluator: G_ema's weights go to the caller, which scores them."""

    def __init__(self, channel: Channel):
        self.channel = channel
        self.config: dict | None = None  # the trainer's resolved config (set once it is built)

    def __call__(self, step: int, G_ema: torch.nn.Module) -> Scored:
        buf = io.BytesIO()
        torch.save({k: v.detach().cpu() for k, v in G_ema.state_dict().items()}, buf)
        weights = buf.getvalue()
        metrics, protocol = self.channel.call(
            "evaluate", step, self.config, weights, G_ema.training
        )
        scored = Scored(metrics)
        scored.protocol = protocol
        return scored


class ChannelServer:
    """The caller's thread answering rank 0 with the real callbacks and evaluator.

    The evaluator gets a G built from rank 0's config (sagan_core.checkpoint.build_generator)
    holding G_ema's weights, on `device`. The first failure of a real callback is kept in `error`.
    """

    def __init__(self, channel: Channel, callbacks: TrainerCallbacks, evaluator, device):  # noqa: ANN001
        self.channel, self.callbacks, self.evaluator = channel, callbacks, evaluator
        self.device = device
        self.error: BaseException | None = None
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="sagan-rank0-channel", daemon=True)

    def __enter__(self) -> ChannelServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self._thread.join(timeout=10)

    def _serve(self) -> None:
        while not self._done.is_set():
            try:
                ask, kind, args = self.channel.requests.get(timeout=0.1)
            except queue.Empty:
                continue
            except Exception as e:  # rank 0 died in the middle of a request; a bad one
                self.error = self.error or (None if isinstance(e, EOFError | OSError) else e)
                continue
            if self.error is not None:  # rank 0 is ending; tell it again
                self.channel.replies.put((ask, False, _line(self.error)))
                continue
            try:
                reply = (ask, True, self._answer(kind, args))
            except Exception as e:
                self.error = e
                reply = (ask, False, _line(e))
            self.channel.replies.put(reply)

    def _answer(self, kind: str, args: tuple) -> Any:
        if kind in EVENTS:
            return getattr(self.callbacks, kind)(*args)
        if kind == "evaluate":
            step, config, weights, training = args
            G = build_generator(TrainConfig.from_dict(config)).to(self.device)
            G.load_state_dict(torch.load(io.BytesIO(weights), map_location="cpu"))
            G.train(training)
            scored = self.evaluator(step, G)
            return {k: float(v) for k, v in scored.items()}, getattr(scored, "protocol", None)
        raise ValueError(f"unknown request {kind!r} from rank 0")


def _line(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}"[:500]
