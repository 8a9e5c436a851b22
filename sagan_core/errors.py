"""The core's errors a caller tells apart without importing torch."""

from __future__ import annotations


class DatasetError(ValueError):
    """A dataset that cannot be used as configured; the message says what is wrong, what to do."""
