"""Remote videos are fetched once per node into a size-capped cache (real S3 server)."""

import fcntl
import os
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from finegym_ray import storage
from finegym_ray.preprocess.local_copy import CacheFolderError, local_copy


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


def test_a_video_uploaded_again_with_other_bytes_is_fetched_anew(s3_prefix, tmp_path):
    uri, cache = f"{s3_prefix}/videos/a.mp4", str(tmp_path / "cache")
    storage.write_bytes(uri, b"a" * 600)  # an upload cut short
    assert open(local_copy(uri, cache, max_bytes=10**6), "rb").read() == b"a" * 600
    storage.write_bytes(uri, b"a" * 1000)  # uploaded again, whole
    assert open(local_copy(uri, cache, max_bytes=10**6), "rb").read() == b"a" * 1000
    storage.write_bytes(uri, b"b" * 1000)  # the same size, other bytes
    assert open(local_copy(uri, cache, max_bytes=10**6), "rb").read() == b"b" * 1000


def _as_another_user(path) -> None:
    if os.geteuid() != 0:
        pytest.fail("needs root to make a folder another user owns", pytrace=False)
    os.chown(path, 4321, 4321)


def test_a_cache_folder_another_user_owns_or_may_write_is_refused(s3_prefix, tmp_path):
    uri = f"{s3_prefix}/videos/a.mp4"
    storage.write_bytes(uri, b"real")
    theirs, shared = tmp_path / "theirs", tmp_path / "shared"
    theirs.mkdir(mode=0o700)
    _as_another_user(theirs)
    shared.mkdir()
    shared.chmod(0o777)
    for folder, why in ((theirs, "owned by uid 4321"), (shared, "others may write")):
        with pytest.raises(CacheFolderError, match=f"{folder}: .*{why}"):
            local_copy(uri, str(folder), max_bytes=10**6)
        assert os.listdir(folder) == []
    made = local_copy(uri, str(tmp_path / "new" / "cache"), max_bytes=10**6)
    assert os.stat(os.path.dirname(made)).st_mode & 0o777 == 0o700


def test_the_default_cache_folder_is_private_and_a_squatted_name_is_passed_by(s3_prefix, tmp_path, monkeypatch):
    uri = f"{s3_prefix}/videos/a.mp4"
    storage.write_bytes(uri, b"real")
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    squatted = tmp_path / f"finegym_ray_videos-{os.geteuid()}"
    squatted.mkdir(mode=0o777)
    _as_another_user(squatted)
    path = local_copy(uri, None, max_bytes=10**6)
    assert open(path, "rb").read() == b"real"
    folder = os.path.dirname(path)
    assert folder.startswith(f"{squatted}-") and os.stat(folder).st_mode & 0o777 == 0o700
    assert os.stat(folder).st_uid == os.geteuid() and os.listdir(squatted) == []
    assert local_copy(uri, None, max_bytes=10**6) == path  # every process of this user finds the same one


def test_a_lock_held_too_long_ends_the_wait_with_a_clear_error(s3_prefix, tmp_path):
    uri, cache = f"{s3_prefix}/videos/a.mp4", tmp_path / "cache"
    storage.write_bytes(uri, b"a" * 100)
    os.unlink(local_copy(uri, str(cache), max_bytes=10**6))
    (lock_path,) = (cache / ".locks").iterdir()
    with open(lock_path) as held:
        fcntl.flock(held, fcntl.LOCK_EX)  # as a stuck download of the same video would
        t0 = time.monotonic()
        with pytest.raises(TimeoutError, match=r"waited 0\.5 s for another process fetching .*a\.mp4"):
            local_copy(uri, str(cache), max_bytes=10**6, lock_timeout_s=0.5)
        assert time.monotonic() - t0 < 5
    assert open(local_copy(uri, str(cache), max_bytes=10**6), "rb").read() == b"a" * 100
