"""Per-step overhead of dloop next to a hand-written loop, PyTorch Ignite and a bare loop.

Run ``python benchmarks/overhead.py [--steps N] [--repeats R]`` (``tox -e bench``). Every
variant iterates the same list of 1,000 batches for ``N / 1000`` epochs and does nothing
with a batch, so what is timed is the loop machinery alone. The variants run interleaved
(in a rotated order) within each repeat; the table shows medians over the repeats, and
each ratio is the median of the per-repeat ratios, so slow drift of the machine cancels.
The "(info)" row writes the hand-written checks in a plainer style, to show how much the
baseline itself depends on style; the ratios and targets use the tighter hand-written loop.
Then tracemalloc follows dloop over 10^6 steps. The closing lines compare the figures with
rule 21 of the specification; they are informational and the script always exits 0.
"""

from __future__ import annotations

import argparse
import gc
import importlib
import math
import os
import platform
import statistics
import sys
import time
import tracemalloc
import warnings
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import Any

import dloop
from dloop import Event, Loop

BATCHES = 1_000
"""Batches in the benchmark's data: a list re-iterated for every epoch."""

UPDATE_EVERY = 16
LOG_EVERY = 100
DECAY_AT_STEP = 10_000
CHECKPOINT_SECONDS = 3600.0
WARN_AT_SECONDS = 50 * 60.0

README_EVENTS: dict[Hashable, Event] = {
    "Update": Event(every_n_steps=UPDATE_EVERY),
    "Log": Event(every_n_steps=LOG_EVERY),
    "DecayLR": Event(at_step=DECAY_AT_STEP),
    "Checkpoint": Event(every_n_seconds=CHECKPOINT_SECONDS),
    "Warn": Event(at_time=WARN_AT_SECONDS),
}
"""The five events of the README's example."""

RARE_EVENT_COUNTS = (5, 100, 1_000)

Counts = tuple[int, ...]
"""What a variant saw: how often each of its events fired, to check the variants agree."""

Runner = Callable[[], Counts]
"""One prepared run of a variant: the timed part."""

Prepare = Callable[[list[int], int], Runner]
"""Builds a run over ``data`` for a number of epochs; building is not timed."""


# ---------------------------------------------------------------------- the variants


def prepare_bare(data: list[int], epochs: int) -> Runner:
    """A plain ``for batch in data`` loop, re-iterated for the epochs: the floor."""

    def run() -> Counts:
        batches = 0
        for _epoch in range(epochs):
            for _batch in data:
                pass
            batches += len(data)
        return (batches,)

    return run


def prepare_hand_written(data: list[int], epochs: int) -> Runner:
    """The README's five checks written by hand, with step counting and epoch ends."""

    def run() -> Counts:
        update = log = decay = checkpoint = warn = epochs_done = 0
        clock = time.monotonic
        start = clock()
        next_checkpoint = start + CHECKPOINT_SECONDS
        warn_at = start + WARN_AT_SECONDS
        step = 0  # batches done, this one included
        for _epoch in range(epochs):
            for _batch in data:
                step += 1
                now = clock()
                if step % UPDATE_EVERY == 0:
                    update += 1
                if step % LOG_EVERY == 0:
                    log += 1
                if step == DECAY_AT_STEP + 1:
                    decay += 1
                if now >= next_checkpoint:
                    checkpoint += 1
                    periods = math.floor((now - start) / CHECKPOINT_SECONDS) + 1
                    next_checkpoint = start + periods * CHECKPOINT_SECONDS
                if now >= warn_at:
                    warn += 1
                    warn_at = math.inf
            epochs_done += 1
        return (update, log, decay, checkpoint, warn, epochs_done)

    return run


def prepare_hand_written_plain(data: list[int], epochs: int) -> Runner:
    """The same checks in a plainer style (``time.monotonic() - start``, ``enumerate``, an
    epoch-end test per step): for information only, the ratios use the loop above."""

    def run() -> Counts:
        update = log = decay = checkpoint = warn = epochs_done = 0
        start = time.monotonic()
        next_checkpoint = CHECKPOINT_SECONDS
        warned = False
        step = 0  # 0-based index of this batch
        for _epoch in range(epochs):
            for i, _batch in enumerate(data):
                elapsed = time.monotonic() - start
                if (step + 1) % UPDATE_EVERY == 0:
                    update += 1
                if (step + 1) % LOG_EVERY == 0:
                    log += 1
                if step == DECAY_AT_STEP:
                    decay += 1
                if elapsed >= next_checkpoint:
                    checkpoint += 1
                    next_checkpoint = (elapsed // CHECKPOINT_SECONDS + 1) * CHECKPOINT_SECONDS
                if not warned and elapsed >= WARN_AT_SECONDS:
                    warn += 1
                    warned = True
                if i == len(data) - 1:
                    epochs_done += 1
                step += 1
        return (update, log, decay, checkpoint, warn, epochs_done)

    return run


def prepare_dloop_readme(data: list[int], epochs: int) -> Runner:
    """dloop with the README's five events; the body checks them like the hand-written loop."""
    loop = Loop(data, max_epochs=epochs, events=README_EVENTS)

    def run() -> Counts:
        update = log = decay = checkpoint = warn = 0
        for _batch, events in loop:
            if "Update" in events:
                update += 1
            if "Log" in events:
                log += 1
            if "DecayLR" in events:
                decay += 1
            if "Checkpoint" in events:
                checkpoint += 1
            if "Warn" in events:
                warn += 1
        return (update, log, decay, checkpoint, warn, loop.state.epoch + 1)

    return run


def load_ignite() -> Any | None:
    """``ignite.engine``, or None when pytorch-ignite is not installed (the variant is
    skipped); torch's warning about a missing NumPy is silenced."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            return importlib.import_module("ignite.engine")
    except ImportError:
        return None


def make_prepare_ignite(engine_module: Any) -> Prepare:
    """Ignite's Engine with handlers equivalent to the README's five events."""
    engine_class = engine_module.Engine
    iteration_completed = engine_module.Events.ITERATION_COMPLETED

    def prepare(data: list[int], epochs: int) -> Runner:
        counts = {"Update": 0, "Log": 0, "DecayLR": 0, "Checkpoint": 0, "Warn": 0}
        clock = time.monotonic
        deadlines = {"start": 0.0, "checkpoint": math.inf, "warn": math.inf}

        def process(engine: Any, batch: int) -> None:
            return None

        engine = engine_class(process)

        def count(engine: Any, key: str) -> None:
            counts[key] += 1

        def check_checkpoint(engine: Any) -> None:
            now = clock()
            if now >= deadlines["checkpoint"]:
                counts["Checkpoint"] += 1
                start = deadlines["start"]
                periods = math.floor((now - start) / CHECKPOINT_SECONDS) + 1
                deadlines["checkpoint"] = start + periods * CHECKPOINT_SECONDS

        def check_warn(engine: Any) -> None:
            if clock() >= deadlines["warn"]:
                counts["Warn"] += 1
                deadlines["warn"] = math.inf

        engine.add_event_handler(iteration_completed(every=UPDATE_EVERY), count, "Update")
        engine.add_event_handler(iteration_completed(every=LOG_EVERY), count, "Log")
        # Ignite counts iterations from 1: dloop's step 10,000 is iteration 10,001.
        engine.add_event_handler(iteration_completed(once=DECAY_AT_STEP + 1), count, "DecayLR")
        engine.add_event_handler(iteration_completed, check_checkpoint)
        engine.add_event_handler(iteration_completed, check_warn)

        def run() -> Counts:
            start = clock()
            deadlines["start"] = start
            deadlines["checkpoint"] = start + CHECKPOINT_SECONDS
            deadlines["warn"] = start + WARN_AT_SECONDS
            state = engine.run(data, max_epochs=epochs)
            return (*counts.values(), int(state.epoch))

        return run

    return prepare


def rare_events(count: int, steps: int) -> dict[Hashable, Event]:
    """``count`` events, a quarter of each kind (every_n_steps, at_step, every_n_seconds,
    at_time), all due after a run of ``steps`` steps ends: pending, never firing."""
    events: dict[Hashable, Event] = {}
    for i in range(count):
        kind = i % 4
        if kind == 0:
            event = Event(every_n_steps=steps + 1 + i)
        elif kind == 1:
            event = Event(at_step=steps + i)
        elif kind == 2:
            event = Event(every_n_seconds=86_400.0 + i)
        else:
            event = Event(at_time=2 * 86_400.0 + i)
        events[f"event_{i}"] = event
    return events


def make_prepare_rare(count: int) -> Prepare:
    """dloop with ``count`` pending events; the body looks at whether anything fired."""

    def prepare(data: list[int], epochs: int) -> Runner:
        loop = Loop(data, max_epochs=epochs, events=rare_events(count, epochs * len(data)))

        def run() -> Counts:
            eventful = 0
            for _batch, events in loop:
                if events:
                    eventful += 1
            return (eventful,)

        return run

    return prepare


def start_up_seconds(count: int, data: list[int], steps: int, repeats: int) -> tuple[float, float]:
    """Median seconds to build a loop with ``count`` pending events, and to get its first
    batch (when the events are put in place; inside the timed part of the rows above)."""
    builds = []
    firsts = []
    for _ in range(repeats):
        events = rare_events(count, steps)
        begin = time.perf_counter()
        loop = Loop(data, max_steps=steps, events=events)
        built = time.perf_counter()
        next(iter(loop))
        builds.append(built - begin)
        firsts.append(time.perf_counter() - built)
        loop.close()
    return statistics.median(builds), statistics.median(firsts)


# ---------------------------------------------------------------------- measuring


@dataclass(frozen=True)
class Variant:
    """A row of the table."""

    name: str
    prepare: Prepare


def time_once(prepare: Prepare, data: list[int], epochs: int) -> tuple[float, Counts]:
    """Seconds of one run (built first, untimed), with the garbage collector off."""
    runner = prepare(data, epochs)
    gc.collect()
    gc.disable()
    try:
        begin = time.perf_counter()
        counts = runner()
        seconds = time.perf_counter() - begin
    finally:
        gc.enable()
    return seconds, counts


def measure(
    variants: Sequence[Variant], data: list[int], epochs: int, repeats: int
) -> tuple[dict[str, list[float]], dict[str, Counts]]:
    """Per-step seconds of every variant for every repeat, variants interleaved."""
    for variant in variants:  # warm-up: imports, caches, lazy set-up
        time_once(variant.prepare, data, max(1, epochs // 20))
    per_step: dict[str, list[float]] = {variant.name: [] for variant in variants}
    counts: dict[str, Counts] = {}
    steps = epochs * len(data)
    for repeat in range(repeats):
        shift = repeat % len(variants)
        for variant in [*variants[shift:], *variants[:shift]]:
            seconds, seen = time_once(variant.prepare, data, epochs)
            per_step[variant.name].append(seconds / steps)
            counts[variant.name] = seen
        print(f"  repeat {repeat + 1}/{repeats} done", flush=True)
    return per_step, counts


def median_ratio(numerator: Sequence[float], denominator: Sequence[float]) -> float:
    """The median of the per-repeat ratios."""
    return statistics.median(a / b for a, b in zip(numerator, denominator, strict=True))


@dataclass(frozen=True)
class MemoryReport:
    """tracemalloc's (current, peak) bytes after the early mark and at the end."""

    early_steps: int
    early: tuple[int, int]
    final_steps: int
    final: tuple[int, int]


def measure_memory(data: list[int], steps: int) -> MemoryReport:
    """Follow dloop with the README's events for ``steps`` steps under tracemalloc (the
    garbage collector off, so anything kept per step shows), marking a tenth of the way."""
    early_steps = steps // 10
    marks: list[tuple[int, int]] = [(0, 0), (0, 0)]
    gc.collect()
    gc.disable()
    tracemalloc.start()
    try:
        loop = Loop(data, max_steps=steps, events=README_EVENTS)
        update = log = 0
        for done, (_batch, events) in enumerate(loop, start=1):
            if "Update" in events:
                update += 1
            if "Log" in events:
                log += 1
            if done == early_steps:
                marks[0] = tracemalloc.get_traced_memory()
        marks[1] = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
        gc.enable()
    return MemoryReport(early_steps, marks[0], steps, marks[1])


# ---------------------------------------------------------------------- reporting


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo, or what ``platform`` knows."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine_lines() -> list[str]:
    """Where the figures come from: platform, Python, CPU and its load, dloop's version."""
    load = (
        ", ".join(f"{value:.2f}" for value in os.getloadavg()) if hasattr(os, "getloadavg") else "?"
    )
    return [
        f"machine: {platform.platform()}",
        f"python:  {platform.python_implementation()} {platform.python_version()}",
        f"cpu:     {cpu_model()} ({os.cpu_count()} logical CPUs; load average {load})",
        f"dloop:   {dloop.__version__} ({hot_path()})",
    ]


def hot_path() -> str:
    """Which per-step path dloop runs here: the C accelerator or the pure-Python one."""
    iterator = iter(Loop([0], max_steps=1))
    name = type(iterator).__name__
    for _ in iterator:
        pass
    if name == "Stepper":
        return "C accelerator dloop._speedups"
    return "pure-Python path (DLOOP_PURE_PYTHON=1 or the accelerator is not built)"


def verdict(value: float, limit: float, target: float | None = None) -> str:
    """PASS or FAIL of a ratio against its limit, and whether it meets the target."""
    if value > limit:
        return f"FAIL (limit {limit:.2f}x)"
    if target is not None and value > target:
        return f"PASS (limit {limit:.2f}x met; target {target:.2f}x missed)"
    if target is not None:
        return f"PASS (target {target:.2f}x met)"
    return "PASS"


def kib(size: int) -> str:
    """Bytes as KiB, for the memory lines."""
    return f"{size / 1024:,.1f} KiB"


def positive_int(text: str) -> int:
    """An argparse type: an int >= 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be an int >= 1, got {text}")
    return value


def main(argv: Sequence[str] | None = None) -> int:
    """Measure every variant, print the table, the memory lines and the targets; return 0."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--steps",
        type=positive_int,
        default=200_000,
        help=f"steps per variant and repeat, a multiple of {BATCHES:,} (default 200,000)",
    )
    parser.add_argument(
        "--repeats", type=positive_int, default=5, help="repeats; medians reported (default 5)"
    )
    parser.add_argument(
        "--memory-steps",
        type=positive_int,
        default=1_000_000,
        help="steps of the tracemalloc run (default 1,000,000)",
    )
    args = parser.parse_args(argv)
    if args.steps % BATCHES:
        parser.error(f"--steps must be a multiple of {BATCHES:,}, got {args.steps:,}")
    epochs = args.steps // BATCHES
    data = list(range(BATCHES))

    print("dloop overhead benchmark (rule 21)")
    for line in machine_lines():
        print(line)
    print(
        f"run:     {args.steps:,} steps per variant ({BATCHES:,} batches x {epochs} epochs), "
        f"{args.repeats} repeats, variants interleaved; medians shown"
    )
    print()

    hand = "hand-written loop, README's 5 checks"
    plain = "(info) same checks, plainer style"
    readme = "dloop, README's 5 events"
    variants = [
        Variant("bare `for batch in data`", prepare_bare),
        Variant(hand, prepare_hand_written),
        Variant(plain, prepare_hand_written_plain),
        Variant(readme, prepare_dloop_readme),
    ]
    same_checks = [plain, readme]
    ignite_engine = load_ignite()
    if ignite_engine is not None:
        ignite_name = f"ignite {importlib.import_module('ignite').__version__} Engine, handlers"
        variants.append(Variant(ignite_name, make_prepare_ignite(ignite_engine)))
        same_checks.append(ignite_name)
    rare_names = {count: f"dloop, {count:,} pending events" for count in RARE_EVENT_COUNTS}
    variants += [
        Variant(rare_names[count], make_prepare_rare(count)) for count in RARE_EVENT_COUNTS
    ]

    print("measuring:", flush=True)
    per_step, counts = measure(variants, data, epochs, args.repeats)
    print()

    width = max(len(variant.name) for variant in variants)
    print(f"{'variant':<{width}}  {'µs/step':>9}  {'min':>9}  {'max':>9}  {'vs hand-written':>15}")
    for variant in variants:
        times = per_step[variant.name]
        ratio = median_ratio(times, per_step[hand])
        print(
            f"{variant.name:<{width}}  {statistics.median(times) * 1e6:9.3f}  "
            f"{min(times) * 1e6:9.3f}  {max(times) * 1e6:9.3f}  {ratio:14.2f}x"
        )
    if ignite_engine is None:
        print("(pytorch-ignite is not installed: its row is skipped)")
    print()

    print("one-off start-up, ms (build the loop untimed above; first batch timed above):")
    for count in RARE_EVENT_COUNTS:
        build, first = start_up_seconds(count, data, args.steps, 5)
        print(
            f"  {count:>5,} pending events: build {build * 1e3:.3f}, first batch {first * 1e3:.3f}"
        )
    print()
    print("firings (Update, Log, DecayLR, Checkpoint, Warn, epochs):")
    for name in [hand, *same_checks]:
        differs = "  <- differs from the hand-written loop" if counts[name] != counts[hand] else ""
        print(f"  {name:<{width}}  {counts[name]}{differs}")
    print()

    memory = measure_memory(data, args.memory_steps)
    print(f"memory (tracemalloc), dloop with the README's events, {memory.final_steps:,} steps:")
    for steps, (current, peak) in (
        (memory.early_steps, memory.early),
        (memory.final_steps, memory.final),
    ):
        print(f"  after {steps:>9,} steps: current {kib(current):>10}, peak {kib(peak):>10}")
    # Flat: nothing at the end above what the first tenth of the run had already reached
    # (bounded working sets such as a per-epoch list may sit anywhere below that).
    current_growth = memory.final[0] - memory.early[1]
    peak_growth = memory.final[1] - memory.early[1]
    print()

    readme_ratio = median_ratio(per_step[readme], per_step[hand])
    events_ratio = median_ratio(per_step[rare_names[1_000]], per_step[rare_names[5]])
    flat = current_growth <= 1024 and peak_growth <= 1024
    print("targets of rule 21 (informational; nothing is asserted):")
    print(
        f"  README loop vs hand-written <= 1.30x (target 1.15x): {readme_ratio:.2f}x  "
        f"{verdict(readme_ratio, 1.30, 1.15)}"
    )
    print(
        f"  1,000 events vs 5 events <= 1.10x: {events_ratio:.2f}x  {verdict(events_ratio, 1.10)}"
    )
    print(
        f"  memory flat in steps (at {memory.final_steps:,} steps, current and peak <= the peak "
        f"at {memory.early_steps:,} + 1 KiB): current {current_growth:+,} B, "
        f"peak {peak_growth:+,} B  {'PASS' if flat else 'FAIL'}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
