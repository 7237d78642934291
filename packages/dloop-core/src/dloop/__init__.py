"""dloop: a training-loop iterator that knows when things should happen.

``for batch, events in Loop(data, max_epochs=3, events={...}):`` yields every batch of the
run and the events that fire on it. Standard library only.
"""

from dloop._event import Event
from dloop._loop import Loop
from dloop._loop_events import LoopEvent, LoopEvents
from dloop._state import LoopState
from dloop._sync import Sync
from dloop._warnings import LoopWarning

__version__ = "0.2.0"

__all__ = [
    "Event",
    "Loop",
    "LoopEvent",
    "LoopEvents",
    "LoopState",
    "LoopWarning",
    "Sync",
    "__version__",
]
