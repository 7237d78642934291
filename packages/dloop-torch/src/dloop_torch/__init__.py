"""dloop-torch: PyTorch DataLoaders and torch.distributed for ``dloop.Loop``.

``Loop(prepare(loader, device="cuda"), sync=DistributedSync(every_n_steps=50), ...)``:
sampler epochs, fast mid-epoch resume and batches copied to the GPU ahead of use, with
time-based decisions agreed across processes.
"""

from dloop_torch._prepare import PreparedData, prepare
from dloop_torch._sync import DistributedSync

__version__ = "0.2.0"

__all__ = [
    "DistributedSync",
    "PreparedData",
    "__version__",
    "prepare",
]
