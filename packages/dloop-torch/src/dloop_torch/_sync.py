"""``DistributedSync``: dloop's agreement across processes over ``torch.distributed``."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.distributed as dist

from dloop._validation import as_count


class DistributedSync:
    """A ``Loop(sync=...)`` that agrees across the processes of a ``torch.distributed`` run.

    Every ``every_n_steps`` steps each process's loop calls ``combine``; it packs all the
    flags into one int64 tensor and runs one ``all_reduce`` with ``MAX`` over ``group``.
    The tensor lives where the group's backend reduces: on the CPU when the backend
    handles CPU tensors (gloo, a ``"cpu:gloo,cuda:nccl"`` pair), else on the current
    device of the backend's accelerator (``torch.cuda.current_device()`` for nccl, read
    at the first agreement, so call ``torch.cuda.set_device`` before training).

    Every process must use the same ``every_n_steps``, and run its loop over the same
    steps, as with any collective.

    Args:
        every_n_steps: How often the processes agree, in steps (an int >= 1). Time-based
            events, ``max_seconds`` and stop requests take effect on those steps only;
            each agreement costs one small all-reduce.
        group: The process group to agree over; None for the default (world) group.

    Raises:
        TypeError, ValueError: ``every_n_steps`` is not an int >= 1.
        RuntimeError: ``torch.distributed`` is not available or not initialised yet
            (call ``torch.distributed.init_process_group`` first; use ``sync=None`` when
            running one process).
        ValueError: ``group`` does not contain this process.
    """

    __slots__ = ("_device", "_every_n_steps", "_group")

    def __init__(self, *, every_n_steps: int, group: dist.ProcessGroup | None = None) -> None:
        as_count("every_n_steps", every_n_steps)
        if not dist.is_available():
            raise RuntimeError(
                "DistributedSync needs torch.distributed, which this build of torch lacks"
            )
        if not dist.is_initialized():
            raise RuntimeError(
                "DistributedSync needs an initialised torch.distributed: call "
                "torch.distributed.init_process_group(...) before creating it (torchrun "
                "sets up the environment for that), or pass sync=None to a Loop that runs "
                "in one process"
            )
        outside: object = dist.GroupMember.NON_GROUP_MEMBER  # what new_group gives others
        if group is not None and (group is outside or dist.get_rank(group) < 0):
            raise ValueError(
                f"group={group!r} does not contain this process (global rank "
                f"{dist.get_rank()}): torch.distributed.new_group(ranks) gives the group only "
                "to the processes in ranks; create the DistributedSync only on those, and "
                "run their loops over it"
            )
        self._every_n_steps = every_n_steps
        self._group = group
        self._device: torch.device | None = None

    @property
    def every_n_steps(self) -> int:
        """How often the processes agree, in steps."""
        return self._every_n_steps

    @property
    def group(self) -> dist.ProcessGroup | None:
        """The process group agreed over; None for the default group."""
        return self._group

    def combine(self, flags: Sequence[int]) -> tuple[int, ...]:
        """Return the element-wise maximum of ``flags`` over every process of the group.

        One all-reduce of one int64 tensor; every process must call it on the same steps
        with the same number of flags (non-negative ints below 2**63).
        """
        if self._device is None:
            self._device = _reduce_device(self._group)
        values = torch.tensor([int(flag) for flag in flags], dtype=torch.int64)
        tensor = values.to(self._device)
        dist.all_reduce(tensor, op=dist.ReduceOp.MAX, group=self._group)
        return tuple(int(value) for value in tensor.tolist())

    def __repr__(self) -> str:
        return f"DistributedSync(every_n_steps={self._every_n_steps!r}, group={self._group!r})"


def _reduce_device(group: dist.ProcessGroup | None) -> torch.device:
    """Where the backend of ``group`` all-reduces: the CPU when it can, else the current
    device of its accelerator."""
    # The backend configuration reads like "cpu:gloo,cuda:gloo" or "cuda:nccl".
    config = dist.get_backend_config(group)
    device_types = [part.split(":")[0].strip() for part in config.split(",") if ":" in part]
    if not device_types:  # a bare backend name
        device_types = ["cuda"] if config.strip() == "nccl" else ["cpu"]
    if "cpu" in device_types:
        return torch.device("cpu")
    device_type = device_types[0]
    if device_type == "cuda":
        return torch.device("cuda", torch.cuda.current_device())
    module = torch.get_device_module(device_type)
    return torch.device(device_type, module.current_device())
