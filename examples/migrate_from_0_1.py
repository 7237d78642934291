"""The loop of dloop 0.1.0's README, ported to dloop 0.2.0.

Run from a checkout:  python examples/migrate_from_0_1.py

docs/migration.md shows this loop next to the 0.1.0 original. The original's
``<your-code>`` blocks are counters here, so that the run can be checked: over 1,000
batches and 3 epochs, "ModelParametersUpdate" fires 187 times (0.2.0 counts steps across
epochs), and "PerEpochUpdate", which keeps 0.1.0's count that restarts with every epoch,
186 times.
"""

from __future__ import annotations

from collections import Counter

from dloop import Event, Loop, LoopEvents

dataloader = [[index] for index in range(1_000)]  # stands in for your data: 1,000 batches
fired: Counter[object] = Counter()

# --8<-- [start:after]
with Loop(
    dataloader,
    max_epochs=3,  # and/or max_steps=, max_seconds=: the first reached ends the run
    events={
        "ModelParametersUpdate": Event(every_n_steps=16),  # steps 15, 31, ... globally
        "Logging": Event(every_n_steps=100),
        "DecreaseLR": Event(at_step=10_000),
        "HourlyCheckpoint": Event(every_n_seconds=3600),  # at 1 h, 2 h, ...: no drift
        "TenMinuteWarning": Event(at_time=50 * 60),  # 50 minutes into training
        # 0.1.0 restarted every_n_steps in each epoch; where that matters:
        "PerEpochUpdate": Event(
            condition_function=lambda state: (state.epoch_step + 1) % 16 == 0,
        ),
    },
) as train_loop:
    for batch, batch_events in train_loop:
        fired["samples"] += len(batch)  # your forward pass and gradients
        if "ModelParametersUpdate" in batch_events:
            fired["ModelParametersUpdate"] += 1  # your optimizer step
        if "PerEpochUpdate" in batch_events:
            fired["PerEpochUpdate"] += 1
        if "Logging" in batch_events:
            fired["Logging"] += 1  # log train_loop.state.step, .progress, .eta
        if "DecreaseLR" in batch_events:
            fired["DecreaseLR"] += 1  # decrease the learning rate
        if "HourlyCheckpoint" in batch_events:
            fired["HourlyCheckpoint"] += 1  # save train_loop.state_dict() too
        if "TenMinuteWarning" in batch_events:
            fired["TenMinuteWarning"] += 1
        if LoopEvents.EPOCH_END in batch_events:
            fired["EPOCH_END"] += 1  # validation
        if LoopEvents.TRAINING_END in batch_events:  # was state.training_end
            fired["TRAINING_END"] += 1
# --8<-- [end:after]

for name, count in fired.items():
    print(f"{name}: {count}")
