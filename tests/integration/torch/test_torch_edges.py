"""``prepare`` at the edges: DataLoader subclasses and wrappers, persistent workers, one-shot
streams, batches of user-defined mapping types, devices this machine lacks."""

from __future__ import annotations

import json
import threading
import warnings
from collections.abc import Iterator, MutableMapping
from itertools import islice
from typing import Any

import pytest
import torch
from _torch_data import RecordingDataset, SeedableRandomSampler
from torch.utils.data import BatchSampler, DataLoader, Dataset, DistributedSampler

from dloop import Loop, LoopEvents, LoopWarning
from dloop_torch import PreparedData, prepare

EPOCHS = 3


def ids(batch: Any) -> list[int]:
    if isinstance(batch, dict):
        batch = batch["ids"]
    return [int(i) for i in torch.as_tensor(batch).flatten()]


class DictLoader(DataLoader[Any]):
    """A DataLoader subclass whose own ``__iter__`` yields dicts (as Accelerate's
    ``DataLoaderShard`` adds its own behaviour around the plain iteration)."""

    def __iter__(self) -> Iterator[Any]:  # type: ignore[override]
        for batch in super().__iter__():
            yield {"ids": batch, "from": "subclass"}


class Wrapper:
    """A loader wrapper that is not a DataLoader (as Lightning Fabric's): it keeps the
    DataLoader in ``_dataloader`` and yields its batches its own way."""

    def __init__(self, loader: DataLoader[Any]) -> None:
        self._dataloader = loader

    def __len__(self) -> int:
        return len(self._dataloader)

    def __iter__(self) -> Iterator[Any]:
        for batch in self._dataloader:
            yield {"ids": batch, "from": "wrapper"}


def train(build: Any, *, stop_at: int | None = None, checkpoint: Any = None) -> tuple[Any, Any]:
    torch.manual_seed(5)
    loop = Loop(prepare(build()), max_epochs=EPOCHS)
    if checkpoint is not None:
        loop.load_state_dict(json.loads(checkpoint[0]))
        torch.set_rng_state(checkpoint[1])
    seen = []
    for batch, _ in loop:
        seen.append((type(batch).__name__, batch.get("from"), ids(batch), float(torch.rand(()))))
        if loop.state.step == stop_at:
            break
    return seen, (json.dumps(loop.state_dict()), torch.get_rng_state())


@pytest.mark.parametrize("kind", ["subclass", "wrapper", "accelerate-like"])
@pytest.mark.parametrize("cut", [2, 7, 11])
def test_a_loader_dloop_does_not_know_keeps_its_own_iteration_and_order_on_resume(
    kind: str, cut: int
) -> None:
    """Also the user's own draws from the global generator: the replay's are undone."""
    dataset = RecordingDataset(18)

    def build() -> Any:
        if kind == "subclass":
            return DictLoader(dataset, batch_size=4, shuffle=True)
        if kind == "accelerate-like":  # Accelerate's loader with use_seedable_sampler=True
            sampler = SeedableRandomSampler(dataset, data_seed=3)
            return DictLoader(dataset, batch_sampler=BatchSampler(sampler, 4, drop_last=False))
        return Wrapper(DataLoader(dataset, batch_size=4, shuffle=True))

    uninterrupted, _ = train(build)
    _, checkpoint = train(build, stop_at=cut)

    resumed, _ = train(build, checkpoint=checkpoint)

    assert resumed == uninterrupted[cut + 1 :]
    source = "subclass" if kind == "accelerate-like" else kind
    assert {(name, origin) for name, origin, _, _ in resumed} == {("dict", source)}


class SkippingDictLoader(DictLoader):
    """A DataLoader subclass that knows how to resume: ``iter_from(start)`` skips the
    first ``start`` batches of indices, so their samples are not loaded."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.starts: list[int] = []

    def iter_from(self, start: int) -> Iterator[Any]:
        self.starts.append(start)
        assert self.batch_sampler is not None
        batches = iter(self.batch_sampler)
        # The draws of iter(DataLoader), in its order: the workers' base seed, then the
        # sampler's (at its first index), so that the epoch's order is its own.
        torch.empty((), dtype=torch.int64).random_(generator=self.generator)
        for indices in islice(batches, start, None):
            batch = self.collate_fn([self.dataset[index] for index in indices])
            yield {"ids": batch, "from": "subclass"}


class SkippingWrapper(Wrapper):
    """A wrapper with its own ``iter_from``."""

    def __init__(self, loader: DataLoader[Any]) -> None:
        super().__init__(loader)
        self.starts: list[int] = []

    def iter_from(self, start: int) -> Iterator[Any]:
        self.starts.append(start)
        for batch in islice(iter(self._dataloader), start, None):
            yield {"ids": batch, "from": "wrapper"}


@pytest.mark.parametrize("kind", ["subclass", "wrapper"])
@pytest.mark.parametrize("cut", [2, 7])
def test_a_loader_with_its_own_iter_from_resumes_through_it_in_the_uninterrupted_order(
    kind: str, cut: int
) -> None:
    datasets: list[RecordingDataset] = []
    built: list[Any] = []

    def build() -> Any:
        datasets.append(RecordingDataset(18))
        if kind == "subclass":
            built.append(SkippingDictLoader(datasets[-1], batch_size=4, shuffle=True))
        else:
            built.append(SkippingWrapper(DataLoader(datasets[-1], batch_size=4, shuffle=True)))
        return built[-1]

    uninterrupted, _ = train(build)
    _, checkpoint = train(build, stop_at=cut)

    resumed, _ = train(build, checkpoint=checkpoint)

    assert resumed == uninterrupted[cut + 1 :]
    assert built[-1].starts == [(cut + 1) % 5]  # 5 batches an epoch
    if kind == "subclass":  # its iter_from skips by index: what was done is not loaded
        assert datasets[-1].loaded[: 18 - 4 * ((cut + 1) % 5)] == [
            i for _, _, batch, _ in resumed[: 5 - (cut + 1) % 5] for i in batch
        ]


def test_set_epoch_reaches_the_samplers_of_the_loader_a_wrapper_keeps() -> None:
    """A wrapper (Lightning Fabric's, for one) has no ``set_epoch`` of its own: the
    DataLoader it keeps gets it, so its DistributedSampler shuffles every epoch."""
    data = RecordingDataset(12)
    sampler: DistributedSampler[torch.Tensor] = DistributedSampler(
        data, num_replicas=1, rank=0, shuffle=True, seed=2
    )
    loop = Loop(prepare(Wrapper(DataLoader(data, batch_size=4, sampler=sampler))), max_epochs=3)

    seen = [i for batch, _ in loop for i in ids(batch)]

    reference = []
    for epoch in range(3):
        sampler.set_epoch(epoch)
        reference.append(list(sampler))
    assert [seen[e * 12 : e * 12 + 12] for e in range(3)] == reference
    assert len({tuple(order) for order in reference}) == 3


def test_a_subclass_is_read_and_the_done_batches_dropped() -> None:
    """The fallback cannot skip by index: it reads the epoch from its start."""
    dataset = RecordingDataset(12)
    loader = DictLoader(dataset, batch_size=4)
    first = Loop(prepare(loader), max_epochs=2)
    for _ in first:
        if first.state.step == 4:  # epoch 1, batch 1
            state = first.state_dict()
            break
    dataset.loaded.clear()

    resumed = Loop(prepare(loader), max_epochs=2)
    resumed.load_state_dict(state)
    rest = [ids(batch) for batch, _ in resumed]

    assert rest == [[8, 9, 10, 11]]
    assert dataset.loaded == list(range(12))


class EpochTaggedDataset(Dataset[torch.Tensor]):
    """Sample i of epoch e is ``tensor([i, e])``; ``set_epoch`` sets e."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.epoch = 0

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, index: int) -> torch.Tensor:
        return torch.tensor([index, self.epoch])

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch


def persistent_loader() -> DataLoader[Any]:
    return DataLoader(EpochTaggedDataset(4), batch_size=2, num_workers=2, persistent_workers=True)


@pytest.mark.parametrize("make", [prepare, PreparedData], ids=["prepare", "PreparedData"])
def test_the_workers_warning_points_at_the_user_s_line(make: Any) -> None:
    with pytest.warns(LoopWarning, match="restarts the workers at every epoch") as caught:
        make(persistent_loader(), device=None, prefetch=2)

    assert caught[0].filename == __file__


@pytest.mark.slow
def test_persistent_workers_see_the_epoch_the_dataset_was_set_to() -> None:
    with pytest.warns(UserWarning, match="restarts the workers at every epoch"):
        prepared = prepare(persistent_loader())

    epochs = [batch[:, 1].tolist() for batch, _ in Loop(prepared, max_epochs=EPOCHS)]

    assert epochs == [[0, 0], [0, 0], [1, 1], [1, 1], [2, 2], [2, 2]]


@pytest.mark.slow
def test_with_persistent_workers_a_resumed_run_equals_the_uninterrupted_one() -> None:
    warnings.filterwarnings("ignore", message=".*restarts the workers", category=UserWarning)
    whole = [batch.tolist() for batch, _ in Loop(prepare(persistent_loader()), max_epochs=3)]
    first = Loop(prepare(persistent_loader()), max_epochs=3)
    for _ in first:
        if first.state.step == 2:  # epoch 1, batch 0
            state = first.state_dict()
            break

    resumed = Loop(prepare(persistent_loader()), max_epochs=3)
    resumed.load_state_dict(state)

    assert [batch.tolist() for batch, _ in resumed] == whole[3:]


def test_persistent_workers_over_a_dataset_without_set_epoch_are_kept() -> None:
    loader = DataLoader(RecordingDataset(4), batch_size=2, num_workers=1, persistent_workers=True)

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        prepare(loader)


def stream(count: int) -> Iterator[torch.Tensor]:
    yield from (torch.tensor([i]) for i in range(count))


def test_prepare_over_a_generator_is_one_shot_as_the_generator_is() -> None:
    message = "max_epochs=2 needs 2 passes over data, but data is a one-shot iterator"

    with pytest.raises(ValueError, match=message):
        Loop(stream(5), max_epochs=2)
    with pytest.raises(ValueError, match=message):
        Loop(prepare(stream(5)), max_epochs=2)


def test_a_run_over_a_prepared_stream_takes_no_batch_it_does_not_yield() -> None:
    source = stream(10)
    loop = Loop(prepare(source), max_steps=2)

    got = [(ids(batch), LoopEvents.TRAINING_END in events) for batch, events in loop]

    assert got == [([0], False), ([1], True)]
    assert ids(next(source)) == [2]


def test_a_prepared_stream_that_runs_out_ends_the_run_with_training_end() -> None:
    with pytest.warns(UserWarning, match="ended") as caught:
        got = [(ids(batch), events) for batch, events in Loop(prepare(stream(3)), max_steps=10)]

    assert [batch for batch, _ in got] == [[0], [1], [2]]
    assert LoopEvents.TRAINING_END in got[-1][1]
    assert "max_steps" in str(caught[0].message)


def test_a_prepared_stream_cut_into_epochs_resumes_where_it_was() -> None:
    first = Loop(prepare(stream(20)), max_epochs=3, epoch_length=4)
    for _ in first:
        if first.state.step == 5:  # epoch 1, batch 1
            state = first.state_dict()
            break

    resumed = Loop(prepare(stream(20)), max_epochs=3, epoch_length=4)
    resumed.load_state_dict(state)

    assert [ids(batch) for batch, _ in resumed] == [[i] for i in range(6, 12)]


class SharedStorageBatch(MutableMapping[str, Any]):
    """A mapping over a storage dict that a shallow copy shares (as some batch types do)."""

    def __init__(self, storage: dict[str, Any]) -> None:
        self.storage = storage

    def __getitem__(self, key: str) -> Any:
        return self.storage[key]

    def __setitem__(self, key: str, value: Any) -> None:
        self.storage[key] = value

    def __delitem__(self, key: str) -> None:
        del self.storage[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.storage)

    def __len__(self) -> int:
        return len(self.storage)


def test_the_device_copy_leaves_the_users_batches_as_they_were() -> None:
    batches = [SharedStorageBatch({"x": torch.ones(2), "name": "a"}) for _ in range(3)]

    moved = list(prepare(batches, device="meta"))

    for original, copy in zip(batches, moved, strict=True):
        assert type(copy) is SharedStorageBatch
        assert copy is not original
        assert copy["x"].device.type == "meta"
        assert copy["name"] == "a"
        assert original["x"].device.type == "cpu"
        assert torch.equal(original["x"], torch.ones(2))


class LockedBatch(MutableMapping[str, Any]):
    """A mapping that copy.deepcopy cannot copy (it holds a lock); ``empty`` says whether
    ``LockedBatch()`` makes an empty one."""

    empty = True

    def __init__(self, storage: dict[str, Any] | None = None) -> None:
        if storage is None and not self.empty:
            raise TypeError("LockedBatch needs its storage")
        self.storage = {} if storage is None else storage
        self.lock = threading.Lock()

    def __getitem__(self, key: str) -> Any:
        return self.storage[key]

    def __setitem__(self, key: str, value: Any) -> None:
        self.storage[key] = value

    def __delitem__(self, key: str) -> None:
        del self.storage[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.storage)

    def __len__(self) -> int:
        return len(self.storage)


def test_a_mapping_copy_cannot_copy_keeps_its_type_through_an_empty_one() -> None:
    batch = LockedBatch({"x": torch.ones(2), "name": "a"})

    (moved,) = prepare([batch], device="meta")

    assert type(moved) is LockedBatch
    assert moved["x"].device.type == "meta"
    assert moved["name"] == "a"
    assert batch["x"].device.type == "cpu"


def test_a_mapping_that_cannot_be_rebuilt_is_a_type_error_naming_its_type() -> None:
    class Rigid(LockedBatch):
        empty = False

    with pytest.raises(TypeError, match=r"a mapping of type .*Rigid that dloop_torch cannot"):
        list(prepare([Rigid({"x": torch.ones(2)})], device="meta"))


class TaggedBatch(MutableMapping[str, Any]):
    """A mapping with storage of its own in every shallow copy (``__copy__``) and a large
    attribute that a copy of each batch need not duplicate."""

    def __init__(self, storage: dict[str, Any], metadata: list[int]) -> None:
        self.storage = storage
        self.metadata = metadata

    def __copy__(self) -> TaggedBatch:
        return TaggedBatch(dict(self.storage), self.metadata)

    def __getitem__(self, key: str) -> Any:
        return self.storage[key]

    def __setitem__(self, key: str, value: Any) -> None:
        self.storage[key] = value

    def __delitem__(self, key: str) -> None:
        del self.storage[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.storage)

    def __len__(self) -> int:
        return len(self.storage)


def test_a_mapping_whose_shallow_copy_has_its_own_storage_is_not_copied_deeply() -> None:
    metadata = list(range(100_000))
    batches = [TaggedBatch({"x": torch.ones(2)}, metadata) for _ in range(3)]

    moved = list(prepare(batches, device="meta"))

    for original, copy in zip(batches, moved, strict=True):
        assert type(copy) is TaggedBatch
        assert copy["x"].device.type == "meta"
        assert original["x"].device.type == "cpu"
        assert copy.metadata is metadata  # shared, not copied for every batch


@pytest.mark.parametrize("device", ["mps", "xpu", "mps:0"])
def test_a_device_this_machine_lacks_is_a_value_error_at_prepare(device: str) -> None:
    if device.startswith("mps") and torch.backends.mps.is_available():
        pytest.skip("this machine has MPS")
    if device == "xpu" and torch.xpu.is_available():
        pytest.skip("this machine has an XPU")

    with pytest.raises(ValueError, match=rf"device='{device}' is not available on this machine"):
        prepare(DataLoader(RecordingDataset(4)), device=device)
