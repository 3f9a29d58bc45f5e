"""finegym_ray.storage against local folders and a real S3 server (SeaweedFS, see conftest)."""

from __future__ import annotations

import io
import logging
import os
import pickle
import socket
import time
from concurrent.futures import ThreadPoolExecutor

import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq
import pytest
from botocore.exceptions import ClientError, EndpointConnectionError, ReadTimeoutError, ResponseStreamingError

from finegym_ray import storage
from finegym_ray.storage import StorageOptions
from tests.support.hostile import WritesMarker as _WritesMarker

MiB = 1024 * 1024
# S3's smallest legal part; the threshold is set low so tests go multipart cheaply.
SMALL_PARTS = StorageOptions(multipart_threshold=5 * MiB, multipart_chunksize=5 * MiB, max_concurrency=4)


@pytest.fixture(params=["local", "s3"])
def root(request, tmp_path) -> str:
    """A fresh empty folder URI on each backend (the S3 server starts only when needed)."""
    if request.param == "local":
        return str(tmp_path / "root")
    return request.getfixturevalue("s3_prefix")


def sample_table() -> pa.Table:
    return pa.table(
        {
            "id": pa.array([1, 2, 3], pa.int64()),
            "score": pa.array([0.5, None, -1.25], pa.float32()),
            "name": ["a", "bé", ""],
            "jpeg": pa.array([b"\xff\xd8", b"", b"\x00" * 10], pa.binary()),
            "frames": pa.array([[1, 2], [], [3]], pa.list_(pa.int32())),
        }
    )


def client_error(code: str, status: int, op: str = "GetObject") -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": code}, "ResponseMetadata": {"HTTPStatusCode": status}}, op)


class FailingReader(io.RawIOBase):
    """A non-seekable stream that yields ``good`` bytes, then raises (a disk or network fault).

    ``stall_s`` waits before raising, so that parts already read are uploaded first.
    """

    def __init__(self, good: int, stall_s: float = 0.0):
        self.left = good
        self.stall_s = stall_s
        self.reads = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buf) -> int:
        self.reads += 1
        if self.left <= 0:
            time.sleep(self.stall_s)
            raise OSError("simulated read failure")
        n = min(len(buf), self.left)
        buf[:n] = b"\x07" * n
        self.left -= n
        return n


def list_local_dir(path) -> list[str]:
    return sorted(os.listdir(path))


# ------------------------------------------------------------------------ URI parsing


def test_parse_uri():
    assert storage.parse_uri("s3://bucket/a/b.parquet") == storage.Location("s3", "bucket", "a/b.parquet")
    assert storage.parse_uri("s3://bucket") == storage.Location("s3", "bucket", "")
    assert storage.parse_uri("s3://bucket/") == storage.Location("s3", "bucket", "")
    assert storage.parse_uri("file:///data/x") == storage.Location("file", "", "/data/x")
    assert storage.parse_uri("file://localhost/data/x") == storage.Location("file", "", "/data/x")
    assert storage.parse_uri("rel/x.json") == storage.Location("file", "", "rel/x.json")
    assert storage.parse_uri(os.path.join("/tmp", "y")).key == "/tmp/y"
    assert str(storage.parse_uri("s3://b/k")) == "s3://b/k"
    for bad in ["gs://b/k", "http://host/x", "s3://", "s3:///key", "file://host/x", ""]:
        with pytest.raises(ValueError):
            storage.parse_uri(bad)


def test_join_keeps_the_uri_style():
    assert storage.join("s3://b", "x", "y.parquet") == "s3://b/x/y.parquet"
    assert storage.join("s3://b/p/", "/x/", "", "y") == "s3://b/p/x/y"
    assert storage.join("file:///d", "a") == "file:///d/a"
    assert storage.join("/d/", "a/b") == "/d/a/b"
    assert storage.join("rel") == "rel"


def test_options_validate_and_pickle(monkeypatch):
    with pytest.raises(ValueError):
        StorageOptions(endpoint_url="localhost:9000")  # no scheme
    with pytest.raises(ValueError):
        StorageOptions(retries=-1)
    opts = StorageOptions(endpoint_url="http://127.0.0.1:9000", retries=2)
    assert pickle.loads(pickle.dumps(opts)) == opts  # travels to Ray workers as is

    monkeypatch.delenv("AWS_ENDPOINT_URL_S3", raising=False)
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://from-env:1")
    assert StorageOptions().resolved_endpoint() == "http://from-env:1"
    assert opts.resolved_endpoint() == "http://127.0.0.1:9000"  # explicit wins
    monkeypatch.delenv("AWS_ENDPOINT_URL")
    assert StorageOptions().resolved_endpoint() is None  # real AWS
    monkeypatch.delenv("AWS_REGION", raising=False)
    monkeypatch.delenv("AWS_DEFAULT_REGION", raising=False)
    assert StorageOptions().resolved_region() == "us-east-1"
    assert StorageOptions(region="eu-west-1").resolved_region() == "eu-west-1"


# ---------------------------------------------------------------------------- retries


def test_retry_helper_retries_transient_errors_then_succeeds():
    failures = [
        client_error("SlowDown", 503),
        client_error("InternalError", 500),
        client_error("TooManyRequestsException", 429),
        EndpointConnectionError(endpoint_url="http://127.0.0.1:1"),
        ReadTimeoutError(endpoint_url="http://127.0.0.1:1"),
        ResponseStreamingError(error="connection reset"),
    ]
    calls, sleeps = [], []

    def flaky():
        calls.append(1)
        if len(calls) <= len(failures):
            raise failures[len(calls) - 1]
        return "ok"

    out = storage.call_with_retries(flaky, retries=len(failures), backoff_s=0.1, max_backoff_s=1.0, sleep=sleeps.append)
    assert out == "ok"
    assert len(calls) == len(failures) + 1
    # Exponential with jitter in [0.5, 1) of min(cap, 0.1 * 2**k).
    for k, delay in enumerate(sleeps):
        nominal = min(1.0, 0.1 * 2**k)
        assert nominal * 0.5 <= delay <= nominal


def test_retry_helper_gives_up_after_the_budget():
    calls = []

    def always_503():
        calls.append(1)
        raise client_error("ServiceUnavailable", 503)

    with pytest.raises(ClientError):
        storage.call_with_retries(always_503, retries=3, backoff_s=0, sleep=lambda s: None)
    assert len(calls) == 4


@pytest.mark.parametrize(
    "error",
    [
        client_error("NoSuchKey", 404),
        client_error("404", 404, "HeadObject"),
        client_error("AccessDenied", 403),
        client_error("InvalidAccessKeyId", 403),
        client_error("SignatureDoesNotMatch", 403),
        client_error("NotImplemented", 501),
        client_error("InvalidArgument", 400),
        OSError("the caller's own file failed"),
        ValueError("bug"),
    ],
    ids=lambda e: type(e).__name__ + ":" + str(getattr(e, "response", {}).get("Error", {}).get("Code", "")),
)
def test_retry_helper_raises_final_errors_at_once(error):
    calls, sleeps = [], []

    def fail():
        calls.append(1)
        raise error

    with pytest.raises(type(error)):
        storage.call_with_retries(fail, retries=5, backoff_s=0.1, sleep=sleeps.append)
    assert len(calls) == 1 and sleeps == []
    assert not storage.is_retryable_error(error)


def test_s3_calls_go_through_the_retry_helper(s3_prefix, monkeypatch):
    """A real client whose GetObject fails with 503 twice: read_bytes still succeeds."""
    uri = storage.join(s3_prefix, "flaky.bin")
    storage.write_bytes(uri, b"payload")
    client = storage.s3_client()
    original = client.get_object
    calls = []

    def flaky_get(**kwargs):
        calls.append(1)
        if len(calls) <= 2:
            raise client_error("SlowDown", 503)
        return original(**kwargs)

    monkeypatch.setattr(client, "get_object", flaky_get)
    assert storage.read_bytes(uri, options=StorageOptions(backoff_s=0.001)) == b"payload"
    assert len(calls) == 3

    calls.clear()
    with pytest.raises(FileNotFoundError):  # 404 is final: one call, no retries
        storage.read_bytes(storage.join(s3_prefix, "missing"), options=StorageOptions(backoff_s=0.001))
    assert len(calls) == 3  # two injected 503s, then the real 404


# ------------------------------------------------------------------ both backends


def test_bytes_and_text_round_trip(root):
    data = bytes(range(256)) * 3
    uri = storage.join(root, "nested", "deep", "blob.bin")
    storage.write_bytes(uri, data)
    assert storage.read_bytes(uri) == data

    storage.write_bytes(uri, b"replaced")  # overwrite replaces whole
    assert storage.read_bytes(uri) == b"replaced"

    empty = storage.join(root, "empty")
    storage.write_bytes(empty, b"")
    assert storage.read_bytes(empty) == b""

    text_uri = storage.join(root, "notes.json")
    text = '{"label": "Salto bwd — stretched", "n": 1}\n'
    storage.write_text(text_uri, text)
    assert storage.read_text(text_uri) == text


def test_parquet_round_trip_and_plain_pyarrow_reads_it(root, s3_server_if_s3):
    table = sample_table()
    uri = storage.join(root, "shards", "unit-0001.parquet")
    storage.write_parquet(table, uri, compression="zstd")
    assert storage.read_parquet(uri).equals(table)
    assert storage.read_parquet(uri, columns=["id", "name"]).equals(table.select(["id", "name"]))

    # Plain pyarrow, no help from storage: the file is a normal Parquet object.
    if root.startswith("s3://"):
        loc = storage.parse_uri(uri)
        body = s3_server_if_s3.client().get_object(Bucket=loc.bucket, Key=loc.key)["Body"].read()
        plain = pq.read_table(pa.BufferReader(body))
    else:
        plain = pq.read_table(uri)
    assert plain.equals(table)


@pytest.fixture
def s3_server_if_s3(request, root):
    return request.getfixturevalue("s3_server") if root.startswith("s3://") else None


@pytest.mark.parametrize("column", ["pickles", "pickles in a list", "uuid"])
def test_a_parquet_file_with_a_column_of_pickles_is_refused_and_runs_nothing(root, tmp_path, column):
    # Importing ray.data registers Ray's pickled-object type with pyarrow: from then on
    # every value of such a column is unpickled when converted, in this process.
    from ray.data.extensions import ArrowPythonObjectArray

    marker = tmp_path / "marker"
    pickles = ArrowPythonObjectArray.from_objects([_WritesMarker(str(marker))])
    values = {"pickles": pickles, "pickles in a list": pa.ListArray.from_arrays([0, 1], pickles),
              "uuid": pa.array([b"\x00" * 16], pa.uuid())}[column]
    uri = storage.join(root, "clips", "unit-0001.parquet")
    storage.write_parquet(pa.table({"key": ["k"], "rgb": values}), uri)
    for columns in (None, ["key"]):
        with pytest.raises(ValueError) as info:
            storage.read_parquet(uri, columns=columns).to_pylist()
        message = str(info.value)
        assert message.startswith(f"{uri}: column 'rgb'") and "extension type" in message and "\n" not in message
    assert not marker.exists()


def test_a_parquet_file_with_ray_tensor_columns_reads_as_written(tmp_path):
    # Ray Data writes array columns (evaluation scores) as its tensor types: plain numbers.
    import numpy as np
    from ray.data.extensions import ArrowTensorArray

    uri = str(tmp_path / "scores.parquet")
    scores = np.arange(6, dtype=np.float32).reshape(2, 3)
    storage.write_parquet(pa.table({"key": ["a", "b"], "scores": ArrowTensorArray.from_numpy(scores)}), uri)
    table = storage.read_parquet(uri)
    np.testing.assert_array_equal(table.column("scores").combine_chunks().to_numpy(), scores)


def test_exists_and_delete(root):
    uri = storage.join(root, "a", "b.txt")
    assert not storage.exists(uri)
    storage.write_text(uri, "x")
    assert storage.exists(uri)
    assert not storage.exists(storage.join(root, "a"))  # a folder/prefix is not an object
    storage.delete(uri)
    assert not storage.exists(uri)
    storage.delete(uri)  # deleting a missing object is fine


def test_list_nested_with_suffix_filter(root):
    names = ["a/1.parquet", "a/b/2.parquet", "a/b/c/3.json", "a/z.parquet", "a2/other.parquet", "top.parquet"]
    for name in names:
        storage.write_bytes(storage.join(root, name), name.encode())
    a = storage.join(root, "a")
    expected = [storage.join(root, n) for n in ["a/1.parquet", "a/b/2.parquet", "a/b/c/3.json", "a/z.parquet"]]
    assert storage.list_uris(a) == expected  # recursive, sorted, not a2/
    assert storage.list_uris(a + "/") == expected
    assert storage.list_uris(a, suffix=".parquet") == [u for u in expected if u.endswith(".parquet")]
    assert storage.list_uris(root) == sorted(storage.join(root, n) for n in names)
    assert storage.list_uris(storage.join(root, "nothing-here")) == []
    for uri in storage.list_uris(root):  # every listed URI reads back
        assert storage.read_bytes(uri) == uri[len(root) + 1 :].encode()


def test_a_doubled_slash_in_an_s3_uri_names_the_same_objects_as_the_single_one(s3_prefix):
    bucket, _, prefix = s3_prefix[len("s3://"):].partition("/")
    single = f"s3://{bucket}/{prefix}/run"
    doubled = f"s3://{bucket}//{prefix}//run/"
    assert storage.parse_uri(doubled + "/x//y") == storage.Location("s3", bucket, f"{prefix}/run/x/y")
    storage.write_text(storage.join(doubled, "epoch_0001", "a.txt"), "written doubled")
    storage.write_text(storage.join(single, "epoch_0002", "b.txt"), "written single")
    for spelling in (single, doubled):
        listed = storage.list_uris(spelling)
        # Each listing keeps the spelling it was asked with, so that a caller can cut
        # its own prefix off the names it gets back.
        assert listed == [storage.join(spelling, "epoch_0001/a.txt"), storage.join(spelling, "epoch_0002/b.txt")]
        assert [storage.read_text(u) for u in listed] == ["written doubled", "written single"]
        assert storage.exists(storage.join(spelling, "epoch_0001", "a.txt"))


def test_missing_objects_raise_file_not_found_with_the_uri(root, tmp_path):
    uri = storage.join(root, "no", "such.parquet")
    for call in (
        lambda: storage.read_bytes(uri),
        lambda: storage.read_text(uri),
        lambda: storage.read_parquet(uri),
        lambda: storage.download_file(uri, tmp_path / "dl" / "x.parquet"),
    ):
        with pytest.raises(FileNotFoundError) as info:
            call()
        assert uri in str(info.value)
    # A failed download leaves nothing behind, not even a temp file.
    assert not (tmp_path / "dl").exists() or list_local_dir(tmp_path / "dl") == []

    with pytest.raises(FileNotFoundError) as info:
        storage.upload_file(tmp_path / "absent.bin", storage.join(root, "x"))
    assert "absent.bin" in str(info.value)


def test_upload_and_download_files(root, tmp_path):
    src = tmp_path / "src.bin"
    src.write_bytes(os.urandom(100_000))
    uri = storage.join(root, "videos", "v.mp4")
    storage.upload_file(src, uri)
    dst = tmp_path / "out" / "v.mp4"
    storage.download_file(uri, dst)
    assert dst.read_bytes() == src.read_bytes()
    assert [p for p in list_local_dir(dst.parent)] == ["v.mp4"]  # no temp left


def test_pyarrow_filesystem_writes_and_reads(root):
    table = sample_table()
    fs, path = storage.pyarrow_filesystem(storage.join(root, "via-arrow", "t.parquet"))
    if root.startswith("s3://"):
        fs = pickle.loads(pickle.dumps(fs))  # as a Ray worker would receive it
    fs.create_dir(path.rsplit("/", 1)[0])  # needed locally; S3 writes a folder marker
    pq.write_table(table, path, filesystem=fs)
    assert pq.read_table(path, filesystem=fs).equals(table)
    assert storage.read_parquet(storage.join(root, "via-arrow", "t.parquet")).equals(table)

    # A dataset written by pyarrow (as Ray Data does) is visible to list_uris.
    ds_fs, ds_path = storage.pyarrow_filesystem(storage.join(root, "ds"))
    pads.write_dataset(table, ds_path, filesystem=ds_fs, format="parquet", basename_template="part-{i}.parquet")
    parts = storage.list_uris(storage.join(root, "ds"), suffix=".parquet")
    assert parts == [storage.join(root, "ds", "part-0.parquet")]
    assert pads.dataset(ds_path, filesystem=ds_fs, format="parquet").to_table().equals(table)


# ------------------------------------------------------------------------- local only


def test_local_failed_write_leaves_old_file_and_no_temp(tmp_path):
    target = tmp_path / "out" / "clip.parquet"
    storage.write_bytes(target, b"old")
    with pytest.raises(OSError, match="simulated"):
        storage.upload_fileobj(FailingReader(good=3 * MiB), target)
    assert target.read_bytes() == b"old"
    assert list_local_dir(target.parent) == ["clip.parquet"]

    fresh = tmp_path / "out" / "new.parquet"
    with pytest.raises(pa.ArrowException, match="compression"):
        storage.write_parquet(sample_table(), fresh, compression="not-a-codec")
    assert not fresh.exists()
    assert list_local_dir(target.parent) == ["clip.parquet"]


def test_local_list_skips_in_flight_temp_files(tmp_path):
    storage.write_bytes(tmp_path / "a.bin", b"1")
    (tmp_path / f".b.bin.tmp-{'0' * 32}").write_bytes(b"partial")
    assert storage.list_uris(tmp_path) == [storage.join(str(tmp_path), "a.bin")]
    uri = "file://" + str(tmp_path)
    assert storage.list_uris(uri) == [uri + "/a.bin"]
    assert storage.read_bytes(uri + "/a.bin") == b"1"


# ---------------------------------------------------------------------------- S3 only


def test_s3_list_over_1000_keys(s3_prefix):
    uris = [storage.join(s3_prefix, "many", f"{i:05d}.txt") for i in range(1100)]
    with ThreadPoolExecutor(32) as pool:
        list(pool.map(lambda u: storage.write_bytes(u, b"x"), uris))
    assert storage.list_uris(storage.join(s3_prefix, "many")) == uris
    assert len(storage.list_uris(s3_prefix, suffix="7.txt")) == 110


def test_s3_multipart_round_trip(s3_prefix, s3_server, tmp_path):
    data = os.urandom(12 * MiB + 123)  # 3 parts of 5 MiB
    uri = storage.join(s3_prefix, "big.bin")
    storage.write_bytes(uri, data, options=SMALL_PARTS)
    assert storage.read_bytes(uri) == data
    loc = storage.parse_uri(uri)
    head = s3_server.client().head_object(Bucket=loc.bucket, Key=loc.key)
    assert head["ContentLength"] == len(data)
    assert head["ETag"].strip('"').endswith("-3")  # a multipart ETag: really went multipart

    src = tmp_path / "big.src"
    src.write_bytes(data)
    uri2 = storage.join(s3_prefix, "big2.bin")
    storage.upload_file(src, uri2, options=SMALL_PARTS)
    dst = tmp_path / "big.dst"
    storage.download_file(uri2, dst, options=SMALL_PARTS)
    assert dst.read_bytes() == data

    table = pa.table({"blob": pa.array([os.urandom(MiB) for _ in range(7)], pa.binary())})
    puri = storage.join(s3_prefix, "big.parquet")
    storage.write_parquet(table, puri, options=SMALL_PARTS, compression="none")
    assert storage.read_parquet(puri).equals(table)


def test_s3_failed_multipart_upload_leaves_no_object_and_no_parts(s3_prefix, s3_server, monkeypatch):
    uri = storage.join(s3_prefix, "broken.bin")
    loc = storage.parse_uri(uri)
    # Count the multipart calls the transfer makes on our cached client.
    client_calls: list[str] = []
    cached = storage.s3_client(SMALL_PARTS)
    for name in ["create_multipart_upload", "upload_part", "complete_multipart_upload", "abort_multipart_upload"]:
        original = getattr(cached, name)

        def counted(*args, _name=name, _original=original, **kwargs):
            client_calls.append(_name)
            return _original(*args, **kwargs)

        monkeypatch.setattr(cached, name, counted)

    reader = FailingReader(good=12 * MiB, stall_s=1.0)  # two full parts go up, then it fails
    with pytest.raises(OSError, match="simulated"):
        storage.upload_fileobj(reader, uri, options=SMALL_PARTS)
    assert client_calls.count("create_multipart_upload") == 1
    assert client_calls.count("upload_part") >= 2  # parts really stored before the failure
    assert client_calls.count("abort_multipart_upload") == 1
    assert "complete_multipart_upload" not in client_calls
    assert not storage.exists(uri)
    client = s3_server.client()
    pending = client.list_multipart_uploads(Bucket=loc.bucket, Prefix=loc.key).get("Uploads", [])
    assert pending == []

    # Replacing an existing object: a failed upload keeps the old one intact.
    storage.write_bytes(uri, b"old")
    with pytest.raises(OSError, match="simulated"):
        storage.upload_fileobj(FailingReader(good=7 * MiB), uri, options=SMALL_PARTS)
    assert storage.read_bytes(uri) == b"old"
    assert client.list_multipart_uploads(Bucket=loc.bucket, Prefix=loc.key).get("Uploads", []) == []


def test_s3_wrong_credentials_are_refused(s3_server, s3_prefix, monkeypatch):
    uri = storage.join(s3_prefix, "secret.txt")
    storage.write_text(uri, "data")

    # The server itself checks signatures: a raw client with a bad secret is refused.
    import boto3

    bad = boto3.client(
        "s3",
        endpoint_url=s3_server.endpoint_url,
        aws_access_key_id=s3_server.access_key,
        aws_secret_access_key="0" * 40,
        region_name="us-east-1",
    )
    loc = storage.parse_uri(uri)
    with pytest.raises(ClientError) as raw:
        bad.get_object(Bucket=loc.bucket, Key=loc.key)
    assert raw.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403

    # Through storage: bad secret, then unknown key id -> PermissionError naming the URI.
    for var, value in [("AWS_SECRET_ACCESS_KEY", "wrong-" * 6), ("AWS_ACCESS_KEY_ID", "AKIDUNKNOWN0000")]:
        with monkeypatch.context() as m:
            m.setenv(var, value)
            storage.clear_client_cache()
            try:
                with pytest.raises(PermissionError) as info:
                    storage.read_text(uri)
                assert uri in str(info.value)
                with pytest.raises(PermissionError):
                    storage.write_text(storage.join(s3_prefix, "nope.txt"), "x")
                with pytest.raises(PermissionError):
                    storage.list_uris(s3_prefix)
            finally:
                storage.clear_client_cache()
    assert storage.read_text(uri) == "data"  # good keys work again
    assert not s3_server.client().list_objects_v2(Bucket=loc.bucket, Prefix=loc.key.replace("secret", "nope"))[
        "KeyCount"
    ]


def test_explicit_endpoint_option_without_env(s3_server, s3_prefix, monkeypatch):
    monkeypatch.delenv("AWS_ENDPOINT_URL")
    opts = StorageOptions(endpoint_url=s3_server.endpoint_url)
    uri = storage.join(s3_prefix, "explicit.txt")
    storage.write_text(uri, "via option", options=opts)
    assert storage.read_text(uri, options=opts) == "via option"
    assert storage.list_uris(s3_prefix, options=opts) == [uri]
    fs, path = storage.pyarrow_filesystem(uri, options=opts)
    with fs.open_input_stream(path) as f:
        assert f.read() == b"via option"


def test_clients_are_cached_per_endpoint(s3_server):
    assert storage.s3_client() is storage.s3_client()
    assert storage.s3_client() is storage.s3_client(StorageOptions(retries=1))  # same endpoint
    other = storage.s3_client(StorageOptions(endpoint_url="http://127.0.0.1:1"))
    assert other is not storage.s3_client()


def test_credentials_never_appear_in_reprs_errors_or_logs(s3_server, s3_prefix, caplog, monkeypatch):
    secrets = [s3_server.access_key, s3_server.secret_key]
    texts: list[str] = []

    opts = StorageOptions(endpoint_url=s3_server.endpoint_url)
    fs, _ = storage.pyarrow_filesystem(s3_prefix)
    texts += [repr(opts), str(opts), repr(StorageOptions()), repr(storage.parse_uri(s3_prefix)), repr(s3_server)]
    texts += [repr(fs), repr(pickle.dumps(fs)), repr(pickle.dumps(opts)), repr(storage.s3_client())]

    def capture(call):
        try:
            call()
        except Exception as e:
            texts.extend([str(e), repr(e), str(e.__cause__), repr(e.__cause__)])
        else:
            raise AssertionError("expected an error")

    capture(lambda: storage.read_bytes(storage.join(s3_prefix, "missing")))
    with caplog.at_level(logging.DEBUG, logger="finegym_ray.storage"):
        # Connection refused: retried (logged), then a StorageError naming the endpoint.
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            dead = f"http://127.0.0.1:{s.getsockname()[1]}"
        dead_opts = StorageOptions(endpoint_url=dead, retries=2, backoff_s=0.001, connect_timeout_s=1)
        with pytest.raises(storage.StorageError) as info:
            storage.read_bytes(storage.join(s3_prefix, "x"), options=dead_opts)
        assert dead in str(info.value) and s3_prefix in str(info.value)
        texts.append(str(info.value))
        with monkeypatch.context() as m:
            m.setenv("AWS_SECRET_ACCESS_KEY", "wrong-secret-value-0123456789")
            storage.clear_client_cache()
            try:
                capture(lambda: storage.read_bytes(storage.join(s3_prefix, "x")))
            finally:
                storage.clear_client_cache()
    retry_logs = [r for r in caplog.records if r.name == "finegym_ray.storage"]
    assert len(retry_logs) == 2
    texts += [r.getMessage() for r in retry_logs]

    joined = "\n".join(texts)
    for secret in secrets + ["wrong-secret-value-0123456789"]:
        assert secret not in joined


def _dead_endpoint() -> str:
    """An http URL on 127.0.0.1 where nothing listens (the port was free a moment ago)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"


def test_s3_endpoint_flag_wins_over_the_s3_specific_env_var(s3_server, s3_prefix, tmp_path):
    """``--s3-endpoint`` is the user's explicit choice for this command: a stale
    AWS_ENDPOINT_URL_S3 (which boto3 prefers over AWS_ENDPOINT_URL) must not override it."""
    import subprocess
    import sys

    data = os.path.join(os.path.dirname(__file__), "dataset", "data")
    out = storage.join(s3_prefix, "manifest")
    env = {**os.environ, "AWS_ENDPOINT_URL_S3": _dead_endpoint(), "AWS_ENDPOINT_URL": _dead_endpoint()}
    r = subprocess.run(
        [sys.executable, "-m", "finegym_ray.cli", "manifest", "--s3-endpoint", s3_server.endpoint_url,
         "--annotations", os.path.join(data, "annotations.json"),
         "--categories", os.path.join(data, "gym4_categories.txt"), "--sets", os.path.join(data, "set_categories.txt"),
         "--splits", os.path.join(data, "gym4_train_element.txt"), os.path.join(data, "gym4_val_element.txt"),
         "--out", out],
        env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    assert storage.exists(storage.join(out, "subactions.parquet"))  # written to the flag's server


def test_use_endpoint_sets_both_names_and_worker_env_carries_them(monkeypatch, s3_server):
    """After ``use_endpoint`` every resolver in this process (ours, boto3's, pyarrow's)
    and the env handed to Ray workers name the same endpoint; no credential is handed on."""
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", _dead_endpoint())
    monkeypatch.setenv("AWS_ENDPOINT_URL", _dead_endpoint())
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-3")
    try:
        storage.use_endpoint(s3_server.endpoint_url)
        assert os.environ["AWS_ENDPOINT_URL_S3"] == os.environ["AWS_ENDPOINT_URL"] == s3_server.endpoint_url
        assert StorageOptions().resolved_endpoint() == s3_server.endpoint_url
        env = storage.worker_env()
        assert env["AWS_ENDPOINT_URL_S3"] == env["AWS_ENDPOINT_URL"] == s3_server.endpoint_url
        assert env["AWS_DEFAULT_REGION"] == "eu-west-3"
        assert not {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"} & set(env)
        assert s3_server.secret_key not in repr(env) and s3_server.access_key not in repr(env)
        # A cached client follows.
        storage.write_text(storage.join(f"s3://{s3_server.bucket}", "use-endpoint.txt"), "ok")
    finally:
        storage.clear_client_cache()
    with pytest.raises(ValueError, match="endpoint_url"):
        storage.use_endpoint("127.0.0.1:9000")  # no scheme: refused before anything is set
