"""Scoring a pose run: the keys cut into chunks that keep each video's keys together."""

from finegym_ray.pose.evaluate import chunks


def test_chunks_hold_every_key_once_and_a_videos_keys_together():
    keys = [f"{video}_E_000010_000020_A_{i:04d}_{i + 1:04d}" for video in ("aaaaaaaaaaa", "bbbbbbbbbbb", "ccccccccccc")
            for i in range(5 if video == "bbbbbbbbbbb" else 2)]
    cut = chunks(list(reversed(keys)), 3)
    assert sorted(k for c in cut for k in c) == sorted(keys)
    assert [sorted({k.split("_E_")[0] for k in c}) for c in cut] == [["aaaaaaaaaaa"], ["bbbbbbbbbbb"], ["ccccccccccc"]]
    assert chunks(keys, 1) == [sorted(keys)]
