"""Checkpoint uploads off the training loop (issue #24): a paper-sized checkpoint is about a
gigabyte, and uploading it from the loop stalled training for as long as the upload took.

The trainer writes the checkpoint file first (torch.save: GPU tensors are copied to the host
there); the upload and the registration of its rows then run on a thread while training goes on.
One upload at most is in flight: the next checkpoint waits for the previous one, so checkpoints are
registered in step order, the trainer never deletes a file that is still being read (it drops the
previous file once the next checkpoint is handed over), and a run dir holds two checkpoints at
most. An error on the thread (an outage that outlasted its retries) is raised in the training
thread at the next checkpoint or at `drain()`, so the job ends exactly as if the loop had uploaded
itself; a crash mid-upload leaves the previous checkpoint as the job's newest registered one.
"""

from __future__ import annotations

import contextvars
import logging
import threading
from collections.abc import Callable

log = logging.getLogger(__name__)


class BackgroundUploads:
    """`submit(upload)` runs `upload()` after the previous one finished: on a thread of its own
    (returning at once), or in the caller when `background` is False (the synchronous path)."""

    def __init__(self, name: str, *, background: bool = True):
        self.name = name  # the thread's name and the log lines' subject, e.g. "job <id>"
        self.background = background
        self.thread: threading.Thread | None = None
        self.error: BaseException | None = None

    def submit(self, upload: Callable[[], None]) -> None:
        """Wait for the upload in flight (raising its error), then start `upload`."""
        self.wait()
        if not self.background:
            upload()
            return
        # A copy of the caller's context: the thread's log records carry the job id and the
        # checkpoint's step (store.log_format), as the training thread's do.
        self.thread = threading.Thread(
            target=contextvars.copy_context().run,
            args=(self.run, upload),
            name=f"upload-{self.name}",
            daemon=True,  # a process that dies mid-upload leaves the previous checkpoint
        )
        self.thread.start()

    def run(self, upload: Callable[[], None]) -> None:
        try:
            upload()
        except BaseException as e:  # kept for the training thread, which decides what it means
            self.error = e

    def busy(self) -> bool:
        """Whether an upload is in flight now."""
        return self.thread is not None and self.thread.is_alive()

    def wait(self) -> None:
        """Block until the upload in flight, if any, has finished; raise its error here, once."""
        thread, self.thread = self.thread, None
        if thread is not None:
            thread.join()
        error, self.error = self.error, None
        if error is not None:
            raise error

    def drain(self, *, reraise: bool = True) -> Exception | None:
        """`wait()` at the end of a run. With `reraise` False (a run that already failed of its
        own error, which must not be masked) an upload's error is logged and returned instead."""
        try:
            self.wait()
        except Exception as e:
            if reraise:
                raise
            log.warning("%s: checkpoint upload failed after the run stopped: %s", self.name, e)
            return e
        return None
