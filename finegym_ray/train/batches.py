"""Training batches epoch after epoch from a Ray Data iterator, shuffled on the worker.

Each epoch of a Ray Train dataset shard is a new Ray Data execution, which a plain loop
only starts when it asks for the epoch's first batch: the device then waits for the
execution to start, for the first shard to be read and sampled, and for the shuffle
buffer to fill (about a second per epoch on 2 cores, an eighth of a demo epoch). Here
the shuffle buffer is ours, so the moment the epoch's last rows are in it is known: the
next epoch's input starts then, while the buffer drains into the last steps.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch


class EpochBatches:
    """Batches of ``batch_size`` rows drawn at random from a buffer that holds at least
    ``buffer_rows`` rows until the epoch's input ends (as Ray Data's local shuffle buffer
    does). ``data`` is a Ray Data iterator or dataset; ``collate_fn`` turns its numpy
    batches into dicts of tensors with rows along the first dimension."""

    def __init__(self, data, *, batch_size: int, buffer_rows: int, collate_fn: Callable[[dict], dict],
                 seed: int = 0, prefetch_batches: int = 4):
        self.data, self.batch_size, self.buffer_rows = data, batch_size, buffer_rows
        self.collate_fn, self.seed, self.prefetch_batches = collate_fn, seed, prefetch_batches
        self._next: _Started | None = None

    def epoch(self, index: int, *, start_next: bool) -> Iterator[dict[str, torch.Tensor]]:
        """The batches of epoch ``index``; ``start_next``: start the next epoch's input
        once this one's is all read (leave False after the last epoch)."""
        started, self._next = self._next or self._start(), None
        rng = np.random.default_rng((self.seed, index))
        rows: list[dict[str, torch.Tensor]] = []
        for batch in started.batches():
            rows.extend({k: v[i] for k, v in batch.items()} for i in range(len(next(iter(batch.values())))))
            while len(rows) >= self.buffer_rows + self.batch_size:
                yield _draw(rows, self.batch_size, rng)
        if start_next:
            self._next = self._start()
        while rows:
            yield _draw(rows, self.batch_size, rng)

    def _start(self) -> _Started:
        # Several batches in flight: a shard's samples arrive together, and the step
        # should not wait for the next shard's task.
        return _Started(iter(self.data.iter_torch_batches(batch_size=self.batch_size, collate_fn=self.collate_fn,
                                                          prefetch_batches=self.prefetch_batches)))


class _Started:
    """An epoch's batch iterator whose first batch is fetched in a background thread."""

    def __init__(self, it: Iterator[dict]):
        self._it, self._first = it, {}
        self._thread = threading.Thread(target=self._fetch_first, daemon=True)
        self._thread.start()

    def _fetch_first(self) -> None:
        try:
            self._first["batch"] = next(self._it, None)
        except BaseException as e:  # re-raised on the training thread
            self._first["error"] = e

    def batches(self) -> Iterator[dict]:
        self._thread.join()
        if "error" in self._first:
            raise self._first["error"]
        if self._first["batch"] is None:
            return
        yield self._first["batch"]
        yield from self._it


def _draw(rows: list[dict[str, Any]], n: int, rng: np.random.Generator) -> dict[str, torch.Tensor]:
    """Removes ``n`` random rows (fewer if fewer are left) and stacks them into a batch."""
    picked = []
    for _ in range(min(n, len(rows))):
        i = int(rng.integers(len(rows)))
        rows[i], rows[-1] = rows[-1], rows[i]
        picked.append(rows.pop())
    return {k: torch.stack([r[k] for r in picked]) for k in picked[0]}


class InputTimer:
    """Iterates ``items``, adding to ``waited`` the seconds spent waiting for each next one
    (the time a training loop is blocked on its input)."""

    def __init__(self, items):
        self._items, self.waited = iter(items), 0.0

    def __iter__(self) -> InputTimer:
        return self

    def __next__(self):
        t0 = time.perf_counter()
        try:
            return next(self._items)
        finally:
            self.waited += time.perf_counter() - t0
