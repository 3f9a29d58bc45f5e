"""The caller's settings hidden from the tests: a user's RAY_ADDRESS (or S3 keys and
endpoint, or finegym-ray switches) would send the tests' drivers, jobs and S3 clients to
the user's cluster and bucket instead of the ones the tests start."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

# Where Ray drivers connect, which namespace and token they use, where `ray job` submits
# to, and where Ray keeps its sockets (a long path there breaks Ray's 107-byte limit).
RAY_NAMES = ("RAY_ADDRESS", "RAY_NAMESPACE", "RAY_API_SERVER_ADDRESS", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH",
             "RAY_JOB_CONFIG_JSON_ENV_VAR", "RAY_TMPDIR")
# Every AWS_ variable (keys, profile, endpoint, region); the tests' S3 server sets its own.
# FINEGYM_RAY_: the package's switches (debug output, capacity check, sweep state key).
PREFIXES = ("AWS_", "FINEGYM_RAY_")


def caller_settings(environ: dict[str, str]) -> list[str]:
    """The names in ``environ`` that the tests must not see."""
    return sorted(k for k in environ if k in RAY_NAMES or k.startswith(PREFIXES))


@contextlib.contextmanager
def isolated_environ(**settings: str) -> Iterator[None]:
    """os.environ without the caller's settings and with ``settings`` for the block, then
    as it was before the block (whatever the tests changed in it)."""
    saved = os.environ.copy()
    for name in caller_settings(os.environ):
        del os.environ[name]
    os.environ.update(settings)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)
