"""Persistent workers and a dataset's ``set_epoch``: the workers' copies must see it."""

from __future__ import annotations

from typing import Any

from torch.utils.data import DataLoader


def restarts_workers(loader: DataLoader[Any]) -> bool:
    """Whether ``prepare`` restarts ``loader``'s workers every epoch: it has persistent
    workers and a dataset with ``set_epoch``, whose calls in the main process would not
    reach the copies of the dataset that the workers hold."""
    return (
        loader.num_workers > 0
        and bool(loader.persistent_workers)
        and callable(getattr(loader.dataset, "set_epoch", None))
    )


def stop_persistent_workers(loader: DataLoader[Any]) -> None:
    """Shut down ``loader``'s persistent workers, if they run, so that its next
    ``iter()`` starts new ones with the dataset as it is now."""
    iterator = getattr(loader, "_iterator", None)
    if iterator is None:
        return
    shutdown = getattr(iterator, "_shutdown_workers", None)
    if callable(shutdown):
        shutdown()
    loader._iterator = None


def workers_warning(loader: DataLoader[Any] | None) -> str:
    """The message that says persistent workers restart every epoch, and why."""
    dataset = None if loader is None else loader.dataset
    return (
        f"the DataLoader has persistent_workers=True and its dataset {dataset!r} has "
        "set_epoch(): the workers keep their own copies of the dataset, which "
        "set_epoch(epoch) in the main process cannot reach, so prepare() restarts the "
        "workers at every epoch (as with persistent_workers=False) to give each epoch the "
        "dataset of that epoch. To keep the workers running, move what depends on the "
        "epoch into the sampler's set_epoch (samplers run in the main process), or pass "
        "persistent_workers=False to say that restarting is what you want."
    )
