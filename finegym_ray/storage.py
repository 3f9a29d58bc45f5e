"""One small API over local paths and ``s3://bucket/key`` URIs.

Every stage reads and writes through these functions, so a run can move from a laptop
folder to an object store by changing a URI. Contracts that callers can rely on:

- URIs: a plain path (``data/x.parquet``, ``/abs/x``), ``file:///abs/x`` (taken
  literally, no percent-decoding) or ``s3://bucket/key``. Anything else is a ValueError.
  Repeated slashes in an S3 key count as one (``s3://b//p//x`` is ``s3://b/p/x``), so
  keys that hold ``//`` cannot be reached through this module.
- Writes are atomic: a reader sees the old object, the new one, or nothing; never a
  part. Locally: temp file in the same directory, fsync, ``os.replace``. On S3: one PUT,
  or a multipart upload that is completed or aborted.
- Errors: a missing object is ``FileNotFoundError`` and refused credentials are
  ``PermissionError`` for both schemes, with the URI in the message; other S3 failures
  (after retries) are ``StorageError``. All are ``OSError``.
- S3 endpoint: ``StorageOptions(endpoint_url=...)``, else ``AWS_ENDPOINT_URL_S3`` /
  ``AWS_ENDPOINT_URL``, else AWS itself. ``use_endpoint`` sets both variables for this
  process; ``worker_env`` is what to hand Ray workers so that they resolve the same.
  Credentials come only from the standard AWS chain (env vars, profile, instance
  role): this module never accepts, stores, logs or prints them.
- Clients are created lazily per process and cached; ``StorageOptions`` is a plain
  frozen dataclass, so it pickles into Ray workers, which build their own clients.

No ray or torch here (see docs/architecture.md): numpy/pyarrow/boto3 only.
"""

from __future__ import annotations

import contextlib
import errno
import io
import logging
import os
import random
import re
import shutil
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import IO, Any, Literal, TypeVar
from urllib.parse import urlparse

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from .errors import BadInput, InputError

log = logging.getLogger(__name__)

T = TypeVar("T")
MiB = 1024 * 1024

__all__ = [
    "ForeignParquetError",
    "Location",
    "StorageError",
    "StorageOptions",
    "call_with_retries",
    "clear_client_cache",
    "create_exclusive",
    "delete",
    "download_file",
    "exists",
    "is_retryable_error",
    "join",
    "list_uris",
    "makedirs",
    "ObjectInfo",
    "object_info",
    "parse_uri",
    "pyarrow_filesystem",
    "read_bytes",
    "read_parquet",
    "read_text",
    "refuse_extension_columns",
    "remove_abandoned_temp_files",
    "s3_client",
    "upload_file",
    "upload_fileobj",
    "use_endpoint",
    "worker_env",
    "write_bytes",
    "write_parquet",
    "write_text",
]


RETRY_ENV = "FINEGYM_RAY_S3_RETRY_S"


def _env_seconds(name: str, default: float) -> float:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise InputError(f"{name} must be a number of seconds, got {raw!r}") from None
    if not 0 <= value < float("inf"):
        raise InputError(f"{name} must be >= 0 seconds, got {raw!r}")
    return value


class StorageError(BadInput, OSError):
    """An S3 request that failed for a reason other than 'missing' or 'refused'."""


# --------------------------------------------------------------------------- options


@dataclass(frozen=True)
class StorageOptions:
    """How to reach S3. Holds no credentials and no client, so it is safe to pickle and print.

    ``None`` for endpoint_url/region means: resolve from the environment at call time
    (in whichever process makes the call), see ``resolved_endpoint``/``resolved_region``.
    """

    endpoint_url: str | None = None
    region: str | None = None
    retries: int = 100  # extra attempts after the first, on transient errors only
    backoff_s: float = 0.2  # first retry delay; doubles per attempt, jittered
    max_backoff_s: float = 5.0
    # Seconds a call keeps retrying transient errors (connection refused, 5xx, timeouts)
    # before it fails: long enough to ride out a restart of the S3 server. Set with
    # FINEGYM_RAY_S3_RETRY_S (Ray workers get the driver's value).
    retry_budget_s: float = field(default_factory=lambda: _env_seconds(RETRY_ENV, 30.0))
    # Objects below the threshold go up in one PUT. 16 MiB parts keep a 1 GB video at
    # 64 requests while staying far below S3's 10,000-part limit (160 GB).
    multipart_threshold: int = 64 * MiB
    multipart_chunksize: int = 16 * MiB
    max_concurrency: int = 8  # threads per multipart transfer
    connect_timeout_s: float = 10.0
    read_timeout_s: float = 60.0

    def __post_init__(self) -> None:
        if self.endpoint_url is not None:
            parsed = urlparse(self.endpoint_url)
            if parsed.scheme not in ("http", "https") or not parsed.netloc:
                raise InputError(f"endpoint_url must be http(s)://host[:port], got {self.endpoint_url!r}")
        if self.retries < 0:
            raise InputError(f"retries must be >= 0, got {self.retries}")
        if not 0 <= self.retry_budget_s < float("inf"):
            raise InputError(f"retry_budget_s must be >= 0 seconds, got {self.retry_budget_s}")
        if self.backoff_s < 0 or self.max_backoff_s < 0:
            raise InputError("backoff_s and max_backoff_s must be >= 0")
        if self.multipart_threshold < 1 or self.multipart_chunksize < 1 or self.max_concurrency < 1:
            raise InputError("multipart_threshold, multipart_chunksize and max_concurrency must be >= 1")

    def resolved_endpoint(self) -> str | None:
        """The S3 endpoint URL: explicit option, AWS_ENDPOINT_URL_S3, AWS_ENDPOINT_URL, else None (AWS)."""
        return (
            self.endpoint_url
            or os.environ.get("AWS_ENDPOINT_URL_S3")
            or os.environ.get("AWS_ENDPOINT_URL")
            or None
        )

    def resolved_region(self) -> str:
        """Region: explicit option, AWS_REGION, AWS_DEFAULT_REGION, else us-east-1 (what most S3 servers expect)."""
        return (
            self.region
            or os.environ.get("AWS_REGION")
            or os.environ.get("AWS_DEFAULT_REGION")
            or "us-east-1"
        )


_DEFAULT_OPTIONS = StorageOptions()


def _opts(options: StorageOptions | None) -> StorageOptions:
    return _DEFAULT_OPTIONS if options is None else options


# ------------------------------------------------------------------------------ URIs


@dataclass(frozen=True)
class Location:
    """A parsed URI. For ``file`` the bucket is empty and ``key`` is the local path as given."""

    scheme: Literal["file", "s3"]
    bucket: str
    key: str

    @property
    def is_s3(self) -> bool:
        return self.scheme == "s3"

    @property
    def uri(self) -> str:
        """``s3://bucket/key``, or the local path for ``file``."""
        if self.is_s3:
            return f"s3://{self.bucket}/{self.key}" if self.key else f"s3://{self.bucket}"
        return self.key

    def __str__(self) -> str:
        return self.uri


def parse_uri(uri: str | os.PathLike[str]) -> Location:
    """Split a path, ``file://`` or ``s3://`` URI into a Location; other schemes raise ValueError."""
    text = os.fspath(uri)
    if not isinstance(text, str):
        raise TypeError(f"expected a str or path-like URI, got {type(uri).__name__}")
    if text.startswith("s3://"):
        bucket, _, key = text[len("s3://") :].partition("/")
        if not bucket:
            raise InputError(f"S3 URI without a bucket: {text!r}")
        # Empty path segments are dropped here, where every reader and writer parses its
        # URI: s3://b//p (easily typed, or made by joining "s3://b/" and "/p") names
        # the same objects as s3://b/p instead of keys of its own ("/p/...").
        return Location("s3", bucket, re.sub("/{2,}", "/", key).lstrip("/"))
    if text.startswith("file://"):
        rest = text[len("file://") :]
        # file:///abs/path has an empty host; file://localhost/abs/path is also local.
        if rest.startswith("localhost/"):
            rest = rest[len("localhost") :]
        if not rest.startswith("/"):
            raise InputError(f"file URI must be absolute (file:///path), got {text!r}")
        return Location("file", "", rest)
    scheme = re.match(r"^([A-Za-z][A-Za-z0-9+.-]*)://", text)
    if scheme:
        raise InputError(f"unsupported URI scheme {scheme.group(1)!r} in {text!r}; use a path, file:// or s3://")
    if not text:
        raise InputError("empty URI")
    return Location("file", "", text)


def join(uri: str | os.PathLike[str], *parts: str) -> str:
    """Append path parts with ``/``, keeping the URI's style (plain path, file:// or s3://).

    Leading/trailing slashes on parts are dropped, so ``join("s3://b/x/", "/y")`` is
    ``s3://b/x/y``; empty parts are skipped.
    """
    base = os.fspath(uri)
    parse_uri(base)  # validate the scheme early
    pieces = [p.strip("/") for p in parts if p and p.strip("/")]
    if not pieces:
        return base
    if base.endswith("/"):
        return base + "/".join(pieces)
    return base + "/" + "/".join(pieces)


# ------------------------------------------------------------------------- retrying

_RETRYABLE_CODES = frozenset(
    {
        "SlowDown",
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "RequestThrottled",
        "RequestThrottledException",
        "TooManyRequestsException",
        "RequestLimitExceeded",
        "BandwidthLimitExceeded",
        "RequestTimeout",
        "RequestTimeoutException",
        "InternalError",
        "ServiceUnavailable",
        "PriorRequestNotComplete",
    }
)
_NOT_FOUND_CODES = frozenset({"NoSuchKey", "NoSuchBucket", "NotFound", "404", "NoSuchUpload"})
_DENIED_CODES = frozenset(
    {
        "AccessDenied",
        "InvalidAccessKeyId",
        "SignatureDoesNotMatch",
        "AllAccessDisabled",
        "ExpiredToken",
        "InvalidToken",
        "AccountProblem",
        "403",
    }
)


def _client_error_info(exc: BaseException) -> tuple[str, int | None] | None:
    """(error code, HTTP status) of a botocore ClientError, else None."""
    from botocore.exceptions import ClientError

    if not isinstance(exc, ClientError):
        return None
    response = exc.response or {}
    code = str(response.get("Error", {}).get("Code", ""))
    status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return code, status


def is_retryable_error(exc: BaseException) -> bool:
    """True for errors worth another try: connection problems, throttling, 5xx.

    Missing objects, refused credentials, bad requests and anything raised by the
    caller's own code (e.g. a source file that cannot be read) are final.
    """
    from botocore import exceptions as bex

    info = _client_error_info(exc)
    if info is not None:
        code, status = info
        if code in _RETRYABLE_CODES:
            return True
        # 501 Not Implemented and 505 HTTP Version Not Supported will not heal.
        return status is not None and (status == 429 or (status >= 500 and status not in (501, 505)))
    return isinstance(
        exc,
        (
            bex.ConnectionError,  # EndpointConnectionError, ConnectTimeoutError, ConnectionClosedError, ...
            bex.HTTPClientError,  # ReadTimeoutError and other transport failures
            bex.ResponseStreamingError,  # connection dropped while reading a body
            bex.IncompleteReadError,
        ),
    )


def _error_summary(exc: BaseException) -> str:
    # Class name plus S3 code: enough to debug, never the request (which is signed).
    info = _client_error_info(exc)
    if info is not None:
        return f"{info[0] or 'error'} (HTTP {info[1]})"
    return type(exc).__name__


def call_with_retries(
    fn: Callable[[], T],
    *,
    retries: int,
    backoff_s: float,
    max_backoff_s: float = 20.0,
    budget_s: float | None = None,
    describe: str = "storage call",
    is_retryable: Callable[[BaseException], bool] = is_retryable_error,
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """Call ``fn()``; on a retryable error wait and try again, up to ``retries`` more times
    and, with ``budget_s``, only while the waits so far and the next stay within
    ``budget_s`` seconds.

    The delay before retry k (k = 0, 1, ...) is ``min(max_backoff_s, backoff_s * 2**k)``
    scaled by a random factor in [0.5, 1): the jitter spreads out many Ray workers that
    were throttled at the same moment. Non-retryable errors and the last error are
    raised unchanged.

    This is the only retry layer for S3 calls (botocore's own is set to one attempt) so
    that attempts never multiply: at most ``retries + 1`` calls of ``fn``.
    """
    attempt = 0
    waited = 0.0
    while True:
        try:
            return fn()
        except Exception as exc:
            if attempt >= retries or not is_retryable(exc):
                raise
            delay = min(max_backoff_s, backoff_s * (2**attempt)) * (0.5 + random.random() / 2)
            if budget_s is not None and waited + delay > budget_s:
                raise
            waited += delay
            log.warning(
                "%s failed with %s; retry %d in %.2fs (%.1f s of retrying so far%s)",
                describe,
                _error_summary(exc),
                attempt + 1,
                delay,
                waited,
                f", budget {budget_s:.0f} s" if budget_s is not None else "",
            )
            sleep(delay)
            attempt += 1


# --------------------------------------------------------------------------- clients

_CLIENTS: dict[tuple[Any, ...], Any] = {}
_CLIENTS_LOCK = threading.Lock()


def s3_client(options: StorageOptions | None = None) -> Any:
    """The process's boto3 S3 client for these options, created on first use.

    boto3 clients are thread safe, so one per (process, endpoint, region, timeouts) is
    shared. The pid is part of the key because a client's connection pool must not be
    shared across fork. Credentials are resolved by boto3's standard chain when the
    client is created; call ``clear_client_cache`` after changing them in-process.
    """
    opts = _opts(options)
    endpoint = opts.resolved_endpoint()
    region = opts.resolved_region()
    key = (os.getpid(), endpoint, region, opts.connect_timeout_s, opts.read_timeout_s, opts.max_concurrency)
    client = _CLIENTS.get(key)
    if client is not None:
        return client
    with _CLIENTS_LOCK:
        client = _CLIENTS.get(key)
        if client is None:
            import boto3
            from botocore.config import Config

            config = Config(
                # Path style works with every S3 server (SeaweedFS, MinIO, Ceph) and
                # with bucket names that are not valid DNS labels.
                s3={"addressing_style": "path"},
                # call_with_retries is the single retry layer (see there).
                retries={"mode": "standard", "total_max_attempts": 1},
                connect_timeout=opts.connect_timeout_s,
                read_timeout=opts.read_timeout_s,
                # Room for every multipart thread plus concurrent small calls.
                max_pool_connections=max(10, opts.max_concurrency * 2),
            )
            # A session of our own: creating clients from boto3's default session is
            # not thread safe.
            session = boto3.session.Session()
            client = session.client("s3", endpoint_url=endpoint, region_name=region, config=config)
            _CLIENTS[key] = client
    return client


def clear_client_cache() -> None:
    """Forget cached clients (e.g. after credentials in the environment changed)."""
    with _CLIENTS_LOCK:
        _CLIENTS.clear()


# Both names boto3 reads, the S3-specific one first; pyarrow reads the general one.
ENDPOINT_ENV = ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL")
REGION_ENV = ("AWS_REGION", "AWS_DEFAULT_REGION")


def use_endpoint(endpoint_url: str) -> None:
    """Make ``endpoint_url`` the S3 endpoint of this process and of every process it starts.

    Sets both AWS_ENDPOINT_URL_S3 and AWS_ENDPOINT_URL: setting only the general name
    would lose to a stale S3-specific one, which boto3 (and ``resolved_endpoint``) prefer.
    A URL without http(s):// is a ValueError, raised before anything changes.
    """
    StorageOptions(endpoint_url=endpoint_url)  # validates
    for name in ENDPOINT_ENV:
        os.environ[name] = endpoint_url
    clear_client_cache()


def worker_env() -> dict[str, str]:
    """The S3 settings of this process for a Ray ``runtime_env``'s ``env_vars``: the
    resolved endpoint under both names (so that it also beats an S3-specific variable on
    a worker node) and the region variables that are set. Never credentials: a runtime
    env is shown in Ray's dashboard and logs, so workers take keys from their own
    environment or instance role."""
    env = {name: os.environ[name] for name in (*REGION_ENV, RETRY_ENV) if os.environ.get(name)}
    endpoint = _DEFAULT_OPTIONS.resolved_endpoint()
    if endpoint:
        env.update(dict.fromkeys(ENDPOINT_ENV, endpoint))
    return env


def _transfer_config(opts: StorageOptions) -> Any:
    from boto3.s3.transfer import TransferConfig

    return TransferConfig(
        multipart_threshold=opts.multipart_threshold,
        multipart_chunksize=opts.multipart_chunksize,
        max_concurrency=opts.max_concurrency,
        use_threads=True,
        # The classic s3transfer manager aborts a failed multipart upload (its failure
        # cleanup calls AbortMultipartUpload); pin it rather than let boto3 pick CRT.
        preferred_transfer_client="classic",
    )


def _translate(exc: BaseException, loc: Location, op: str, opts: StorageOptions) -> BaseException:
    """Map a botocore error to FileNotFoundError / PermissionError / StorageError naming the URI."""
    from botocore import exceptions as bex

    endpoint = opts.resolved_endpoint() or "AWS S3"
    info = _client_error_info(exc)
    if info is not None:
        code, status = info
        if code in _NOT_FOUND_CODES or status == 404:
            what = "No such bucket" if code == "NoSuchBucket" else "No such object"
            return FileNotFoundError(errno.ENOENT, f"{what} (at {endpoint})", loc.uri)
        if code in _DENIED_CODES or status == 403:
            return PermissionError(errno.EACCES, f"Access denied: {code} on {op} (at {endpoint})", loc.uri)
        return StorageError(f"{op} {loc.uri} failed at {endpoint}: {_error_summary(exc)}")
    if isinstance(exc, bex.NoCredentialsError):
        return PermissionError(
            errno.EACCES,
            "No AWS credentials found (env vars, profile or instance role) for " f"{op} (at {endpoint})",
            loc.uri,
        )
    if isinstance(exc, bex.BotoCoreError):
        # botocore messages name the endpoint and the failure, never the keys.
        return StorageError(f"{op} {loc.uri} failed at {endpoint}: {type(exc).__name__}: {str(exc)[:300]}")
    return exc


def _s3_call(op: str, loc: Location, opts: StorageOptions, fn: Callable[[], T], *, retry: bool = True) -> T:
    try:
        return call_with_retries(
            fn,
            retries=opts.retries if retry else 0,
            backoff_s=opts.backoff_s,
            max_backoff_s=opts.max_backoff_s,
            budget_s=opts.retry_budget_s,
            describe=f"{op} {loc.uri}",
        )
    except Exception as exc:
        translated = _translate(exc, loc, op, opts)
        if translated is exc:
            raise
        raise translated from exc


# ---------------------------------------------------------------------- local files

# Temp files are hidden and carry a uuid, so concurrent writers never collide and
# list_uris can skip them.
_TEMP_NAME = re.compile(r"^\..*\.tmp-[0-9a-f]{32}$")


def _fsync_dir(directory: str) -> None:
    # Makes the rename itself durable; not every platform/filesystem allows it.
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _atomic_write_local(path: str, write: Callable[[IO[bytes]], None]) -> None:
    """Run ``write(f)`` on a temp file beside ``path``, fsync it, then rename it into place.

    ``open(.., "xb")`` rather than mkstemp so the file gets the usual umask-based mode
    (mkstemp's 0600 would surprise other users of a shared data folder).
    """
    path = os.path.abspath(path)
    directory, name = os.path.split(path)
    os.makedirs(directory, exist_ok=True)
    tmp = os.path.join(directory, f".{name[:100]}.tmp-{uuid.uuid4().hex}")
    try:
        with open(tmp, "xb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    _fsync_dir(directory)


def _local_missing(loc: Location) -> FileNotFoundError:
    # Re-raised so the message names the URI as the caller wrote it (file:// included).
    return FileNotFoundError(errno.ENOENT, "No such file", loc.uri)


# ------------------------------------------------------------------------ bytes/text


def read_bytes(uri: str | os.PathLike[str], *, options: StorageOptions | None = None,
               max_bytes: int | None = None) -> bytes:
    """The whole object. Missing: FileNotFoundError. ``max_bytes``: an object larger than
    that is a ValueError, read no further than one byte past it (for files from others)."""
    loc = parse_uri(uri)
    if not loc.is_s3:
        try:
            with open(loc.key, "rb") as f:
                data = f.read() if max_bytes is None else f.read(max_bytes + 1)
        except FileNotFoundError as exc:
            raise _local_missing(loc) from exc
        return _within(data, max_bytes, loc)
    opts = _opts(options)
    client = s3_client(opts)

    def get() -> bytes:
        # The body is read inside the retried call: a connection dropped mid-body
        # restarts the GET instead of returning a short object.
        response = client.get_object(Bucket=loc.bucket, Key=loc.key)
        with contextlib.closing(response["Body"]) as body:
            return body.read() if max_bytes is None else body.read(max_bytes + 1)

    return _within(_s3_call("GetObject", loc, opts, get), max_bytes, loc)


def _within(data: bytes, max_bytes: int | None, loc: Location) -> bytes:
    if max_bytes is not None and len(data) > max_bytes:
        raise InputError(f"{loc.uri}: more than {max_bytes} bytes, larger than such a file can be")
    return data


def write_bytes(uri: str | os.PathLike[str], data: bytes, *, options: StorageOptions | None = None) -> None:
    """Replace the object with ``data``, atomically (parent folders are created locally)."""
    loc = parse_uri(uri)
    if not loc.is_s3:
        _atomic_write_local(loc.key, lambda f: f.write(data))
        return
    opts = _opts(options)
    if len(data) < opts.multipart_threshold:
        client = s3_client(opts)
        _s3_call("PutObject", loc, opts, lambda: client.put_object(Bucket=loc.bucket, Key=loc.key, Body=data))
    else:
        upload_fileobj(io.BytesIO(data), uri, options=opts)


def create_exclusive(uri: str | os.PathLike[str], data: bytes, *, options: StorageOptions | None = None) -> bool:
    """Create the object with ``data`` only if nothing is there yet; True if this call
    created it, False if it existed. Complete or absent, never half written.

    Locally a hard link of a finished temp file (fails if the name exists). On S3 a
    conditional PUT (``If-None-Match: *``, which AWS S3 and SeaweedFS honour). A server
    that ignores the condition overwrites instead; callers that must know read the
    object back and compare (``finegym_ray.lease`` does).
    """
    loc = parse_uri(uri)
    if not loc.is_s3:
        path = os.path.abspath(loc.key)
        directory, name = os.path.split(path)
        os.makedirs(directory, exist_ok=True)
        tmp = os.path.join(directory, f".{name[:100]}.tmp-{uuid.uuid4().hex}")
        with open(tmp, "xb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(tmp, path)
        except FileExistsError:
            return False
        finally:
            os.unlink(tmp)
        _fsync_dir(directory)
        return True
    opts = _opts(options)
    client = s3_client(opts)

    def put() -> bool:
        try:
            client.put_object(Bucket=loc.bucket, Key=loc.key, Body=data, IfNoneMatch="*")
            return True
        except Exception as exc:  # noqa: BLE001 - sorted below; anything else goes to _s3_call
            info = _client_error_info(exc)
            # 412: it exists; 409: a concurrent conditional write of the same key won.
            if info is not None and (info[0] in ("PreconditionFailed", "ConditionalRequestConflict")
                                     or info[1] in (409, 412)):
                return False
            raise

    return _s3_call("PutObject", loc, opts, put)


def read_text(uri: str | os.PathLike[str], *, encoding: str = "utf-8", options: StorageOptions | None = None,
              max_bytes: int | None = None) -> str:
    """The object decoded as text (``max_bytes``: see :func:`read_bytes`)."""
    return read_bytes(uri, options=options, max_bytes=max_bytes).decode(encoding)


def write_text(
    uri: str | os.PathLike[str], text: str, *, encoding: str = "utf-8", options: StorageOptions | None = None
) -> None:
    """Replace the object with ``text`` encoded, atomically."""
    write_bytes(uri, text.encode(encoding), options=options)


# ------------------------------------------------------------------ objects/listing


def exists(uri: str | os.PathLike[str], *, options: StorageOptions | None = None) -> bool:
    """True if an object (locally: a regular file) exists at ``uri``. Folders/prefixes are not objects."""
    loc = parse_uri(uri)
    if not loc.is_s3:
        return os.path.isfile(loc.key)
    if not loc.key:
        return False
    opts = _opts(options)
    client = s3_client(opts)
    try:
        _s3_call("HeadObject", loc, opts, lambda: client.head_object(Bucket=loc.bucket, Key=loc.key))
    except FileNotFoundError:
        return False
    return True


@dataclass(frozen=True)
class ObjectInfo:
    """What identifies one version of an object: its size in bytes, its ETag as the
    server sends it (None for local files) and when it was last written (seconds since
    the epoch)."""

    size: int
    etag: str | None
    mtime: float


def object_info(uri: str | os.PathLike[str], *, options: StorageOptions | None = None) -> ObjectInfo:
    """Size, ETag and last write of the object (one HEAD on S3). Missing: FileNotFoundError."""
    loc = parse_uri(uri)
    if not loc.is_s3:
        try:
            st = os.stat(loc.key)
        except FileNotFoundError as exc:
            raise _local_missing(loc) from exc
        return ObjectInfo(st.st_size, None, st.st_mtime)
    opts = _opts(options)
    client = s3_client(opts)
    head = _s3_call("HeadObject", loc, opts, lambda: client.head_object(Bucket=loc.bucket, Key=loc.key))
    return ObjectInfo(int(head["ContentLength"]), head.get("ETag"), head["LastModified"].timestamp())


def list_uris(
    prefix_uri: str | os.PathLike[str], *, suffix: str | None = None, options: StorageOptions | None = None
) -> list[str]:
    """Every object below the folder ``prefix_uri``, recursively, as sorted full URIs.

    ``prefix_uri`` is a folder on both schemes: ``s3://b/videos`` lists ``videos/...``
    but not ``videos2/...``. Results are ``join(prefix_uri, name below it)``: they keep
    the prefix's style (plain path, file://, s3://) and spelling (``s3://b//p`` lists
    ``s3://b//p/x``), so a caller can cut its prefix off them. ``suffix`` keeps only
    names ending with it (e.g. ``".parquet"``). A missing folder gives ``[]``. In-flight
    temp files of this module and S3 folder markers (keys ending in ``/``) are skipped.
    """
    base = os.fspath(prefix_uri)
    loc = parse_uri(base)
    if not loc.is_s3:
        root = loc.key
        if os.path.isfile(root):
            return [base] if suffix is None or base.endswith(suffix) else []
        found = []
        for dirpath, _dirnames, filenames in os.walk(root):
            rel_dir = os.path.relpath(dirpath, root)
            for name in filenames:
                if _TEMP_NAME.match(name) or (suffix is not None and not name.endswith(suffix)):
                    continue
                rel = name if rel_dir == "." else os.path.join(rel_dir, name)
                found.append(join(base, rel.replace(os.sep, "/")))
        return sorted(found)

    opts = _opts(options)
    client = s3_client(opts)
    prefix = loc.key.rstrip("/") + "/" if loc.key.strip("/") else ""
    found = []
    token: str | None = None
    # A manual ContinuationToken loop rather than boto3's paginator: each page is then
    # retried on its own instead of restarting a long listing from the first page.
    while True:
        kwargs: dict[str, Any] = {"Bucket": loc.bucket, "Prefix": prefix}
        if token:
            kwargs["ContinuationToken"] = token
        page = _s3_call("ListObjectsV2", loc, opts, lambda kwargs=kwargs: client.list_objects_v2(**kwargs))
        for item in page.get("Contents", []):
            key = item["Key"]
            if key.endswith("/") or (suffix is not None and not key.endswith(suffix)):
                continue
            found.append(join(base, key[len(prefix):]))
        if not page.get("IsTruncated"):
            break
        token = page.get("NextContinuationToken")
        if not token:
            raise StorageError(f"ListObjectsV2 {loc.uri}: truncated page without a continuation token")
    return sorted(found)


def remove_abandoned_temp_files(folder_uri: str | os.PathLike[str], *, older_than_s: float) -> list[str]:
    """Delete this module's temp files directly in a local folder that were last written
    more than ``older_than_s`` seconds ago (left by a writer that was killed before its
    rename); returns their paths. Younger ones may belong to a writer still at work. On
    S3 there are none: a PUT appears whole or not at all."""
    loc = parse_uri(folder_uri)
    if loc.is_s3 or not os.path.isdir(loc.key):
        return []
    cutoff = time.time() - older_than_s
    removed = []
    for entry in os.scandir(loc.key):
        if _TEMP_NAME.match(entry.name) and entry.is_file(follow_symlinks=False):
            with contextlib.suppress(FileNotFoundError):
                if entry.stat(follow_symlinks=False).st_mtime < cutoff:
                    os.remove(entry.path)
                    removed.append(entry.path)
    return removed


def delete(uri: str | os.PathLike[str], *, options: StorageOptions | None = None) -> None:
    """Remove one object if it exists; a missing object is not an error (S3 cannot tell cheaply)."""
    loc = parse_uri(uri)
    if not loc.is_s3:
        with contextlib.suppress(FileNotFoundError):
            os.remove(loc.key)
        return
    opts = _opts(options)
    client = s3_client(opts)
    _s3_call("DeleteObject", loc, opts, lambda: client.delete_object(Bucket=loc.bucket, Key=loc.key))


def remove_empty_folder(uri: str | os.PathLike[str]) -> None:
    """Remove a local folder if it is empty (its objects deleted); a folder that holds
    anything, or is gone, is left as it is. A no-op on S3, where a folder ends with its
    last object."""
    loc = parse_uri(uri)
    if not loc.is_s3:
        with contextlib.suppress(OSError):
            os.rmdir(loc.key)


def remove_empty_folders(uri: str | os.PathLike[str]) -> None:
    """Remove a local folder's empty subfolders, deepest first, then the folder itself if
    it ends empty (its objects deleted); anything that holds a file is left. A no-op on
    S3."""
    loc = parse_uri(uri)
    if loc.is_s3 or not os.path.isdir(loc.key) or os.path.islink(loc.key):
        return
    for folder, _, _ in sorted(os.walk(loc.key), key=lambda w: -w[0].count(os.sep)):
        remove_empty_folder(folder)


def makedirs(uri: str | os.PathLike[str]) -> None:
    """Create a local folder and its parents; a no-op on S3, where folders do not exist."""
    loc = parse_uri(uri)
    if not loc.is_s3:
        os.makedirs(loc.key, exist_ok=True)


# -------------------------------------------------------------------------- transfers


def upload_fileobj(fileobj: IO[bytes], uri: str | os.PathLike[str], *, options: StorageOptions | None = None) -> None:
    """Write everything readable from ``fileobj`` to ``uri``, atomically.

    Large streams go up as a multipart upload that s3transfer aborts on any error,
    including one raised by ``fileobj`` itself, so no half object or orphaned parts
    stay behind. Only seekable streams are retried (rewound to where they started).
    """
    loc = parse_uri(uri)
    if not loc.is_s3:
        _atomic_write_local(loc.key, lambda f: shutil.copyfileobj(fileobj, f, 4 * MiB))
        return
    opts = _opts(options)
    client = s3_client(opts)
    config = _transfer_config(opts)
    try:
        start = fileobj.tell() if fileobj.seekable() else None
    except (AttributeError, OSError):
        start = None
    attempts = 0

    def upload() -> None:
        nonlocal attempts
        if attempts and start is not None:
            fileobj.seek(start)
        attempts += 1
        client.upload_fileobj(fileobj, loc.bucket, loc.key, Config=config)

    _s3_call("Upload", loc, opts, upload, retry=start is not None)


def upload_file(local_path: str | os.PathLike[str], uri: str | os.PathLike[str], *,
                options: StorageOptions | None = None) -> None:
    """Copy a local file to ``uri`` (S3 or local), atomically. A missing source: FileNotFoundError."""
    src = parse_uri(local_path)
    if src.is_s3:
        raise InputError(f"upload_file needs a local source path, got {src.uri!r}")
    try:
        f = open(src.key, "rb")
    except FileNotFoundError as exc:
        raise _local_missing(src) from exc
    with f:
        upload_fileobj(f, uri, options=options)


def download_file(uri: str | os.PathLike[str], local_path: str | os.PathLike[str], *,
                  options: StorageOptions | None = None) -> None:
    """Copy ``uri`` to a local file, atomically: ``local_path`` is complete or untouched."""
    dst = parse_uri(local_path)
    if dst.is_s3:
        raise InputError(f"download_file needs a local destination path, got {dst.uri!r}")
    loc = parse_uri(uri)
    if not loc.is_s3:
        try:
            src = open(loc.key, "rb")
        except FileNotFoundError as exc:
            raise _local_missing(loc) from exc
        with src:
            _atomic_write_local(dst.key, lambda f: shutil.copyfileobj(src, f, 4 * MiB))
        return
    opts = _opts(options)
    client = s3_client(opts)
    config = _transfer_config(opts)

    def write(f: IO[bytes]) -> None:
        def attempt() -> None:
            f.seek(0)
            f.truncate()
            client.download_fileobj(loc.bucket, loc.key, f, Config=config)

        _s3_call("Download", loc, opts, attempt)

    _atomic_write_local(dst.key, write)


# --------------------------------------------------------------------------- parquet


def write_parquet(
    table: pa.Table, uri: str | os.PathLike[str], *, options: StorageOptions | None = None, **write_table_kwargs: Any
) -> None:
    """Write ``table`` as one Parquet file, atomically. Extra kwargs go to ``pyarrow.parquet.write_table``."""
    loc = parse_uri(uri)
    if not loc.is_s3:
        _atomic_write_local(loc.key, lambda f: pq.write_table(table, f, **write_table_kwargs))
        return
    # Serialised in memory first: the upload can then be retried, and the PUT or
    # multipart upload is what makes the object appear atomically.
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, **write_table_kwargs)
    write_bytes(uri, sink.getvalue().to_pybytes(), options=options)


class ForeignParquetError(BadInput, pa.ArrowInvalid):
    """A Parquet file with a column of an Arrow extension type other than Ray's tensors
    (which Ray Data writes for this project's array columns, e.g. evaluation scores).
    Some run code when read: the values of Ray's ``ray.data.arrow_pickled_object`` are
    pickles, unpickled on conversion in any process that has imported ``ray.data``. An
    ``ArrowInvalid``, so that callers treat it as any other file that is not one of ours
    (a resumed stage writes it again)."""


# Ray Data's tensor columns: their values are plain numbers in Arrow buffers.
TENSOR_EXTENSIONS = frozenset({"ray.data.arrow_tensor", "ray.data.arrow_tensor_v2",
                               "ray.data.arrow_variable_shaped_tensor"})


def _extension_in(dtype: pa.DataType) -> pa.BaseExtensionType | None:
    """The first extension type other than Ray's tensors in ``dtype`` or nested in it
    (lists, structs, maps, dictionaries, run-end encoding), else None."""
    if isinstance(dtype, pa.BaseExtensionType):
        return None if dtype.extension_name in TENSOR_EXTENSIONS else dtype
    if pa.types.is_dictionary(dtype):  # its value type is no child field
        return _extension_in(dtype.value_type)
    for i in range(dtype.num_fields):
        found = _extension_in(dtype.field(i).type)
        if found is not None:
            return found
    return None


def refuse_extension_columns(schema: pa.Schema, uri: str | os.PathLike[str]) -> None:
    """Raise ForeignParquetError naming ``uri`` when ``schema`` (of the Parquet file or
    folder at ``uri``) has a column of an Arrow extension type other than Ray's tensors; for readers that read
    columns through pyarrow themselves (ranged reads, datasets) rather than
    :func:`read_parquet`, before they convert a value."""
    for column in schema:
        found = _extension_in(column.type)
        if found is not None:
            raise ForeignParquetError(
                f"{os.fspath(uri)}: column {column.name!r} is of Arrow extension type {found.extension_name!r}, which "
                f"no file of this project holds and whose values may run code when read (Ray's pickled "
                f"objects do): refused before any value is read")


def _read_checked_parquet(source: pa.NativeFile, columns: list[str] | None, uri: str) -> pa.Table:
    # The whole file's schema (footer only), before a single value is read, whichever
    # columns were asked for.
    refuse_extension_columns(pq.read_schema(source), uri)
    return pq.read_table(source, columns=columns)


def read_parquet(
    uri: str | os.PathLike[str], *, columns: list[str] | None = None, options: StorageOptions | None = None
) -> pa.Table:
    """Read one Parquet file (not a folder dataset). Missing: FileNotFoundError. A file
    with a column of an Arrow extension type other than Ray's tensors:
    ForeignParquetError (a ValueError) naming it, before any value is read."""
    loc = parse_uri(uri)
    if not loc.is_s3:
        try:
            source = pa.OSFile(loc.key)
        except FileNotFoundError as exc:
            raise _local_missing(loc) from exc
        # One open file for the check and the read: a file replaced in between cannot
        # slip past the check.
        with source:
            return _read_checked_parquet(source, columns, loc.uri)
    return _read_checked_parquet(pa.BufferReader(read_bytes(uri, options=options)), columns, loc.uri)


def pyarrow_filesystem(
    uri: str | os.PathLike[str], *, options: StorageOptions | None = None
) -> tuple[pafs.FileSystem, str]:
    """A pyarrow filesystem and the path inside it, for Ray Data / pyarrow.dataset I/O.

    For S3 this is an ``S3FileSystem`` pointed at the resolved endpoint and region,
    with credentials left to pyarrow's standard AWS chain: the object pickles (e.g.
    into Ray tasks) without keys. Note pyarrow does not pickle the retry strategy; a
    copy in another process uses pyarrow's default (3 attempts).
    """
    loc = parse_uri(uri)
    if not loc.is_s3:
        return pafs.LocalFileSystem(), os.path.abspath(loc.key)
    opts = _opts(options)
    kwargs: dict[str, Any] = {
        "region": opts.resolved_region(),
        "connect_timeout": opts.connect_timeout_s,
        "request_timeout": opts.read_timeout_s,
        # pyarrow's own backoff, not ours: 10 attempts span a few seconds to a minute.
        "retry_strategy": pafs.AwsStandardS3RetryStrategy(max_attempts=10),
    }
    endpoint = opts.resolved_endpoint()
    if endpoint:
        parsed = urlparse(endpoint)
        # pyarrow wants host:port and the scheme apart; with an endpoint override it
        # uses path-style addressing (force_virtual_addressing stays False).
        kwargs["endpoint_override"] = parsed.netloc
        kwargs["scheme"] = parsed.scheme
    path = f"{loc.bucket}/{loc.key}".rstrip("/")
    return pafs.S3FileSystem(**kwargs), path
