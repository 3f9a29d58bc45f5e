"""Remote videos are fetched once per node into a size-capped cache (real S3 server)."""

import os
from concurrent.futures import ThreadPoolExecutor

from finegym_ray import storage
from finegym_ray.preprocess.local_copy import local_copy


def test_local_paths_are_used_in_place(tmp_path):
    video = tmp_path / "v.mp4"
    video.write_bytes(b"x")
    assert local_copy(str(video), str(tmp_path / "cache"), 10) == str(video)
    assert not (tmp_path / "cache").exists()


def test_concurrent_workers_share_one_download_and_the_cache_evicts_old_videos(s3_prefix, tmp_path):
    a, b = f"{s3_prefix}/videos/a.mp4", f"{s3_prefix}/videos/b.mp4"
    storage.write_bytes(a, b"a" * 1000)
    storage.write_bytes(b, b"b" * 1000)
    cache = str(tmp_path / "cache")
    with ThreadPoolExecutor(4) as pool:
        paths = list(pool.map(lambda _: local_copy(a, cache, max_bytes=1500), range(8)))
    assert len(set(paths)) == 1 and open(paths[0], "rb").read() == b"a" * 1000
    path_b = local_copy(b, cache, max_bytes=1500)  # 2000 bytes would pass the cap: a goes
    assert open(path_b, "rb").read() == b"b" * 1000
    assert sorted(p for p in os.listdir(cache) if not p.startswith(".")) == [path_b.rsplit("/", 1)[-1]]
