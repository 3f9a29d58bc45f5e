"""The batches the training loop hands torch, from the read-only arrays Ray Data gives it."""

import warnings

import numpy as np
import pytest
import torch

from finegym_ray.train.loop import _Collate


def _read_only_batch() -> dict:
    # Ray Data's numpy batches are views of Arrow buffers: not writable.
    batch = {"x": np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4), "label": np.array([1, 0]),
             "flow_bound": np.array([20.0, 20.0], dtype=np.float32), "key": np.array(["a", "b"])}
    for v in batch.values():
        v.setflags(write=False)
    return batch


def test_collate_of_read_only_arrays_warns_nothing_and_keeps_the_values():
    batch = _read_only_batch()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # torch's "The given NumPy array is not writable" among them
        out = _Collate()(batch)
    assert set(out) == {"x", "label", "flow_bound"}
    assert torch.equal(out["x"], torch.from_numpy(batch["x"].copy()))
    out["x"][0, 0, 0] = 99  # the tensor owns writable memory: the Arrow buffer is untouched
    assert batch["x"][0, 0, 0] == 0


@pytest.mark.parametrize("order", ["C", "F"])
def test_collate_gives_contiguous_tensors(order):
    batch = {k: np.asarray(v, order=order) for k, v in _read_only_batch().items()}
    out = _Collate()(batch)
    assert all(t.is_contiguous() for t in out.values())
