"""Where torch-fidelity's Inception weights come from, torch-free: the service checks it can
evaluate before it queues an evaluation."""

from __future__ import annotations

import os
from pathlib import Path

INCEPTION_WEIGHTS_FILE = "weights-inception-2015-12-05-6726825d.pth"
INCEPTION_WEIGHTS_URL = (
    "https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/" + INCEPTION_WEIGHTS_FILE
)


def hub_weights_path() -> Path:
    """Where torch hub keeps the weights (torch.hub.get_dir()'s rule, without torch)."""
    hub = os.environ.get("TORCH_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "torch"
    )
    return Path(hub) / "hub" / "checkpoints" / INCEPTION_WEIGHTS_FILE
