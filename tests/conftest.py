"""Shared pytest fixtures."""

# ----------------------------------------------------------------------------------
# S3: a real SeaweedFS server for the session (tests/s3server.py). Self-contained:
# keep this block together; add other fixtures below it.
# ----------------------------------------------------------------------------------
import os
import uuid

import pytest

from tests.s3server import S3ServerError, start_s3_server

# Variables that would change how clients sign or where they connect; they are
# replaced (or removed) for the session and restored afterwards.
_S3_ENV_REMOVED = ("AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN", "AWS_PROFILE", "AWS_ENDPOINT_URL_S3", "AWS_REGION")


def _clear_storage_clients() -> None:
    # Cached boto3 clients captured the old environment's keys and endpoint.
    from finegym_ray import storage

    storage.clear_client_cache()


@pytest.fixture(scope="session")
def s3_server():
    """A running SeaweedFS S3 server with a fresh bucket and random keys.

    Sets AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_ENDPOINT_URL and
    AWS_DEFAULT_REGION for the session (restored afterwards). Fails, never skips, when
    the server cannot start: a storage test that silently did not run proves nothing.
    """
    try:
        server = start_s3_server(bucket="finegym-test")
    except S3ServerError as e:
        pytest.fail(f"cannot start the SeaweedFS S3 server for tests: {e}", pytrace=False)
    keys = (*server.env, *_S3_ENV_REMOVED)
    saved = {k: os.environ.get(k) for k in keys}
    for k in _S3_ENV_REMOVED:
        os.environ.pop(k, None)
    os.environ.update(server.env)
    _clear_storage_clients()
    try:
        yield server
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        _clear_storage_clients()
        server.stop()


@pytest.fixture
def s3_prefix(s3_server) -> str:
    """A fresh, empty ``s3://bucket/test-<uuid>`` prefix on the session server."""
    return f"s3://{s3_server.bucket}/test-{uuid.uuid4().hex}"


# ----------------------------------------------------------------------------------
# (other fixtures below)
# ----------------------------------------------------------------------------------
