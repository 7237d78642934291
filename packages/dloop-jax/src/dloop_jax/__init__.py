"""dloop for JAX: device prefetch with shardings, and agreement across JAX processes.

``Loop(prefetch_to_device(batches, sharding=...), ..., sync=MultihostSync(every_n_steps=50))``
hands jitted steps batches already on their devices, and makes every process of a
multi-process job take its time-based decisions on the same step.
"""

from dloop_jax._multihost_sync import MultihostSync
from dloop_jax._prefetch import DevicePrefetch, prefetch_to_device

__version__ = "0.2.0"

__all__ = [
    "DevicePrefetch",
    "MultihostSync",
    "__version__",
    "prefetch_to_device",
]
