"""EpochBatches on real Ray Data datasets: every row once per epoch, shuffled across the
buffer, the next epoch's input started before this epoch's last step, errors raised.
InputTimer: the time spent waiting for input, and only that."""

import time

import numpy as np
import pytest
import torch

from finegym_ray.train.batches import EpochBatches, InputTimer


def tensors(batch: dict) -> dict:
    return {k: torch.from_numpy(np.array(v)) for k, v in batch.items()}  # a writable copy


def stamped(batch: dict) -> dict:
    batch["made_at"] = np.full(len(batch["id"]), time.time())
    return batch


def test_each_epoch_yields_every_row_once_in_buffer_shuffled_batches(ray_cluster):
    import ray.data

    batches = EpochBatches(ray.data.range(100, override_num_blocks=5), batch_size=8, buffer_rows=16,
                           collate_fn=tensors)
    orders = []
    for epoch in range(3):
        out = list(batches.epoch(epoch, start_next=epoch < 2))
        assert [len(b["id"]) for b in out] == [8] * 12 + [4]
        order = torch.cat([b["id"] for b in out]).tolist()
        assert sorted(order) == list(range(100))
        orders.append(order)
    assert orders[0] != sorted(orders[0])
    assert orders[0] != orders[1] != orders[2]


def test_the_next_epoch_is_read_while_this_one_drains(ray_cluster):
    import ray.data

    data = ray.data.range(64, override_num_blocks=8).map_batches(stamped, batch_size=None)
    # 64 rows, a 48-row buffer: the last 6 steps (1.8 s here) come after the input ends.
    batches = EpochBatches(data, batch_size=8, buffer_rows=48, collate_fn=tensors)
    for _ in batches.epoch(0, start_next=True):
        time.sleep(0.3)
    last_step_at = time.time()
    first = next(batches.epoch(1, start_next=False))
    assert first["made_at"].min().item() < last_step_at


def test_an_input_error_reaches_the_training_loop(ray_cluster):
    import ray.data

    def broken(batch):
        raise ValueError("shard 7 is unreadable")

    data = ray.data.range(8).map_batches(broken)
    with pytest.raises(Exception, match="shard 7 is unreadable"):
        list(EpochBatches(data, batch_size=4, buffer_rows=0, collate_fn=tensors).epoch(0, start_next=False))


def test_input_timer_counts_the_waits_not_the_work():
    def slow(n):
        for i in range(n):
            time.sleep(0.05)
            yield i

    items = InputTimer(slow(4))
    for _ in items:
        time.sleep(0.3)  # the loop's own work: not waiting
    assert items.waited >= 0.2
    assert items.waited < 0.8  # with the 1.2 s of work counted it would pass 1.4 (margin for a busy machine)
