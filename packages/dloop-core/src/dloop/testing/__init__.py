"""Test doubles for code that uses dloop: a manual clock and an in-process sync."""

from dloop.testing._clock import ManualClock
from dloop.testing._thread_sync import ThreadSync

__all__ = [
    "ManualClock",
    "ThreadSync",
]
