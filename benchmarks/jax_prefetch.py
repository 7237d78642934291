"""Steps per second of a transfer-bound jitted step: host batches, prefetched, on device.

Run ``python benchmarks/jax_prefetch.py [--batch-mb MB] [--steps N] [--repeats R]`` on a
machine with an accelerator (it runs on whatever JAX backend exists; on the CPU the
"device" is host memory and the figures say nothing about prefetching).

Three variants iterate the same ``dloop.Loop`` over the same batches and run the same
jitted step, which reads the whole batch and then does ``--work`` matrix products:

- ``host``: numpy batches handed to the jitted step, which transfers them when called;
- ``prefetch``: ``dloop_jax.prefetch_to_device(batches, size=--size)``;
- ``device``: the batches put on the device beforehand (the upper bound).

``--work`` defaults to the number of products that take about as long as one batch's
transfer (calibrated at start), where overlapping the two matters most. The variants run
interleaved (in a rotated order) within each repeat; the table shows medians over the
repeats and each ratio is the median of the per-repeat ratios. The script always exits 0.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from collections.abc import Callable, Iterable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

import dloop
import dloop_jax
from dloop import Loop

WIDTH = 1024
"""Columns of a batch and the side of the square parameter matrix."""

Step = Callable[[jax.Array, Any], jax.Array]

block_until_ready: Callable[[Any], Any] = jax.block_until_ready
"""``jax.block_until_ready`` under a typed name (JAX leaves it unannotated)."""


def make_step(work: int) -> Step:
    """A jitted step that depends on every byte of the batch, then does ``work`` products
    of ``WIDTH x WIDTH`` matrices."""

    @jax.jit
    def step(params: jax.Array, batch: jax.Array) -> jax.Array:
        signal = jnp.mean(batch, axis=0)  # the step cannot start before the batch arrived
        hidden = jax.lax.fori_loop(
            0, work, lambda _, h: jnp.tanh(h @ params), params + 1e-3 * signal[None, :]
        )
        updated: jax.Array = params + 1e-6 * hidden
        return updated

    return step


def host_batches(count: int, megabytes: float) -> list[np.ndarray[Any, Any]]:
    rows = max(1, int(megabytes * 2**20 / (4 * WIDTH)))
    rng = np.random.default_rng(0)
    return [rng.standard_normal((rows, WIDTH), dtype=np.float32) for _ in range(count)]


def seconds_per_transfer(batches: list[np.ndarray[Any, Any]]) -> float:
    """Median seconds of one ``jax.device_put`` of a batch, waited for."""
    times = []
    for _ in range(3):
        for batch in batches:
            start = time.perf_counter()
            block_until_ready(jax.device_put(batch))
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def seconds_per_step(step: Step, params: jax.Array, batch: jax.Array, steps: int = 10) -> float:
    """Seconds of one step on a batch already on the device, after compilation."""
    block_until_ready(step(params, batch))
    start = time.perf_counter()
    for _ in range(steps):
        params = step(params, batch)
    block_until_ready(params)
    return (time.perf_counter() - start) / steps


def calibrate_work(transfer: float, batch: jax.Array, params: jax.Array) -> int:
    """The number of products whose step takes about one transfer's time."""
    one = seconds_per_step(make_step(1), params, batch)
    eight = seconds_per_step(make_step(8), params, batch)
    per_product = max((eight - one) / 7, 1e-7)
    return max(1, min(10_000, round((transfer - one) / per_product) + 1))


def steps_per_second(data: Iterable[Any], step: Step, params: jax.Array, steps: int) -> float:
    start = time.perf_counter()
    for batch, _ in Loop(data, max_steps=steps):
        params = step(params, batch)
    block_until_ready(params)
    return steps / (time.perf_counter() - start)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-mb", type=float, default=64.0, help="megabytes per batch")
    parser.add_argument("--batches", type=int, default=8, help="distinct host batches")
    parser.add_argument("--steps", type=int, default=200, help="steps per timed run")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per variant")
    parser.add_argument("--size", type=int, default=2, help="prefetch_to_device size")
    parser.add_argument("--work", type=int, default=None, help="products per step")
    args = parser.parse_args(argv)

    backend = jax.default_backend()
    device = jax.devices()[0]
    print(
        f"jax {jax.__version__}, backend {backend} ({device.device_kind}), "
        f"dloop {dloop.__version__}, dloop_jax {dloop_jax.__version__}, "
        f"python {platform.python_version()}"
    )
    if backend == "cpu":
        print(
            "WARNING: the backend is the CPU: a 'transfer' is a copy within host memory, so "
            "these figures are NOT meaningful for device prefetching. Run on a GPU or TPU.",
            file=sys.stderr,
        )

    batches = host_batches(args.batches, args.batch_mb)
    on_device = [jax.device_put(batch) for batch in batches]
    block_until_ready(on_device)
    params = jnp.eye(WIDTH, dtype=jnp.float32) * 0.5
    transfer = seconds_per_transfer(batches)
    work = args.work if args.work is not None else calibrate_work(transfer, on_device[0], params)
    step = make_step(work)
    compute = seconds_per_step(step, params, on_device[0])
    megabytes = batches[0].nbytes / 2**20
    print(
        f"batch {batches[0].shape} float32 = {megabytes:.1f} MiB; one transfer "
        f"{transfer * 1e3:.3f} ms ({megabytes / 1024 / transfer:.2f} GiB/s); one step on "
        f"device data {compute * 1e3:.3f} ms (work={work})"
    )

    variants: dict[str, Callable[[], Iterable[Any]]] = {
        "host": lambda: batches,
        "prefetch": lambda: dloop_jax.prefetch_to_device(batches, size=args.size),
        "device": lambda: on_device,
    }
    for make_data in variants.values():  # warm up: compile, and first transfers
        steps_per_second(make_data(), step, params, min(args.steps, 2 * args.batches))

    results: dict[str, list[float]] = {name: [] for name in variants}
    names = list(variants)
    for repeat in range(args.repeats):
        order = names[repeat % len(names) :] + names[: repeat % len(names)]
        for name in order:
            results[name].append(steps_per_second(variants[name](), step, params, args.steps))

    print(f"\n{args.repeats} repeats of {args.steps} steps; prefetch size={args.size}")
    print(f"{'variant':<10}{'steps/s (median)':>18}{'ms/step':>10}")
    for name in names:
        rate = statistics.median(results[name])
        print(f"{name:<10}{rate:>18.1f}{1e3 / rate:>10.3f}")

    def ratio(top: str, bottom: str) -> float:
        return statistics.median(a / b for a, b in zip(results[top], results[bottom], strict=True))

    print(f"\nprefetch / host:    {ratio('prefetch', 'host'):.2f}x")
    print(f"prefetch / device:  {ratio('prefetch', 'device'):.2f}x")
    print(f"host / device:      {ratio('host', 'device'):.2f}x")
    ideal = (transfer + compute) / max(transfer, compute)
    print(f"ideal overlap gain (transfer + step) / max(transfer, step): {ideal:.2f}x")
    if backend == "cpu":
        print("(CPU backend: see the warning above; these ratios are not meaningful)")


if __name__ == "__main__":
    main()
